// A doctor in a real browser (Debian's Chromium driven by playwright-core) with a test card
// presented through Playwright's clientCertificates: the regional network's HPKI login,
// the portal's profile, a disclosure setting changed, the network's next login releasing
// less, a consent withdrawn and the disclosure history read. Screenshots go to SCREENSHOTS.
//
// Environment: CHROMIUM, PORTAL_URL, HAREYAKA_URL, IDP_LOGIN_ORIGIN, CARD_CERT, CARD_KEY,
// SPKI_HASHES (the servers' public-key pins Chromium trusts: the test PKI's TLS key),
// SCREENSHOTS. Prints one JSON line per step; exits non-zero at the first failure.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const portal = env('PORTAL_URL');
const hareyaka = env('HAREYAKA_URL');
const shots = env('SCREENSHOTS');
mkdirSync(shots, { recursive: true });

const step = (name, detail = {}) => console.log(JSON.stringify({ step: name, ...detail }));
const expect = (condition, message) => {
  if (!condition) throw new Error(message);
};

const browser = await chromium.launch({
  executablePath: env('CHROMIUM'),
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    // Trust exactly the test servers' key, not every certificate.
    `--ignore-certificate-errors-spki-list=${env('SPKI_HASHES')}`,
  ],
});
try {
  const context = await browser.newContext({
    locale: 'ja-JP',
    clientCertificates: [
      { origin: env('IDP_LOGIN_ORIGIN'), certPath: env('CARD_CERT'), keyPath: env('CARD_KEY') },
    ],
  });
  const page = await context.newPage();
  const shot = async (name) => {
    await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
    step('screenshot', { name });
  };

  // Answers the IdP's consent page when it is shown.
  const consentIfAsked = async () => {
    const approve = page.locator('button[name="decision"][value="approve"]');
    if (await approve.count()) {
      await shot('idp-consent');
      await approve.click();
      await page.waitForLoadState();
    }
  };

  // 1. The regional network: password form and the HPKI button; the card login, consent.
  await page.goto(`${hareyaka}/`);
  await shot('01-hareyaka-login');
  await page.click('[data-action="hpki-login"]');
  await page.waitForLoadState();
  await consentIfAsked();
  await page.waitForURL(`${hareyaka}/me`);
  const emailBefore = (await page.textContent('[data-claim="email"]')).trim();
  expect(emailBefore.includes('@'), `the network should receive the email first: ${emailBefore}`);
  await shot('02-hareyaka-released-before');
  step('hareyaka-login', { email: emailBefore });

  // 2. The portal: single sign-on at the IdP, the profile with the card's validity.
  await page.goto(`${portal}/`);
  await shot('03-portal-welcome');
  await page.click('[data-action="login"]');
  await page.waitForURL(`${portal}/profile`);
  expect((await page.getAttribute('html', 'lang')) === 'ja', 'Japanese first');
  const role = await page.textContent('[data-field="hpki_role"] td');
  expect(role.includes('医師'), `role: ${role}`);
  const notAfter = await page.textContent('[data-field="not_after"] td');
  expect(/\d+年\d+月\d+日/.test(notAfter), `certificate validity: ${notAfter}`);
  await shot('04-portal-profile');
  step('portal-profile', { role, notAfter });

  // 3. 情報開示設定: email no longer to regional networks.
  await page.click('a[href="/settings"]');
  const box = page.locator('input[value="email:regional_network"]');
  expect(await box.isChecked(), 'email is released to regional networks by default');
  await box.uncheck();
  await shot('05-portal-settings-changed');
  await page.click('form[action="/settings"] button[type="submit"]');
  await page.waitForURL(`${portal}/settings?done=saved`);
  expect(await page.locator('[role="status"]').count(), 'a saved message');
  expect(!(await page.locator('input[value="email:regional_network"]').isChecked()), 'saved unticked');
  await shot('06-portal-settings-saved');
  step('settings-saved');

  // 4. The network's next login releases less.
  await page.goto(`${hareyaka}/auth/login?return_to=%2Fme`);
  await page.waitForLoadState();
  await consentIfAsked();
  await page.waitForURL(`${hareyaka}/me`);
  const emailAfter = (await page.textContent('[data-claim="email"]')).trim();
  expect(!emailAfter.includes('@'), `the email must be withheld now: ${emailAfter}`);
  await shot('07-hareyaka-released-after');
  step('hareyaka-login-again', { email: emailAfter });

  // 5. Consents: the network is listed; withdraw.
  await page.goto(`${portal}/consents`);
  const row = page.locator('tr[data-relying-party="hareyaka"]');
  expect(await row.count(), 'the network is among the consents');
  await shot('08-portal-consents');
  await row.locator('button[type="submit"]').click();
  await page.waitForURL(`${portal}/consents?done=withdrawn`);
  expect(!(await page.locator('tr[data-relying-party="hareyaka"]').count()), 'consent gone');
  await shot('09-portal-consent-withdrawn');
  step('consent-withdrawn');

  // 6. The disclosure history: releases to the network, newest first.
  await page.click('a[href="/history"]');
  const releases = await page
    .locator('tr[data-kind="release"][data-relying-party="hareyaka"]')
    .count();
  expect(releases >= 2, `two releases to the network on record, saw ${releases}`);
  const kinds = await page.locator('tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.kind));
  expect(kinds[0] === 'consent.revoked', `newest first: ${kinds.slice(0, 3)}`);
  await shot('10-portal-history');
  step('history', { releases });

  // 7. English on request.
  await page.click('a[hreflang="en"]');
  expect((await page.getAttribute('html', 'lang')) === 'en', 'English page');
  await shot('11-portal-history-en');
  step('english');
  await context.close();
} catch (e) {
  // Where the browser stopped, for the test's failure message.
  for (const page of browser.contexts().flatMap((c) => c.pages())) {
    step('failed-at', { url: page.url(), text: (await page.textContent('body').catch(() => ''))?.slice(0, 400) });
    await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
  }
  throw e;
} finally {
  await browser.close();
}
step('done');
