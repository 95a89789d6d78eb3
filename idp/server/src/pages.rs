//! Server-rendered pages: Japanese first, English with `?lang=en` or an English
//! `Accept-Language`. Every dynamic value is HTML-escaped.

use actix_web::HttpRequest;
use actix_web::http::header;

/// The page language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Ja,
    En,
}

impl Lang {
    /// `?lang=` wins; otherwise the first language of `Accept-Language`; Japanese by default.
    pub fn of(req: &HttpRequest) -> Self {
        let query = req.query_string();
        for pair in query.split('&') {
            match pair {
                "lang=en" => return Self::En,
                "lang=ja" => return Self::Ja,
                _ => {}
            }
        }
        let first = req
            .headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|tag| tag.trim().to_ascii_lowercase());
        match first {
            Some(tag) if tag.starts_with("en") => Self::En,
            _ => Self::Ja,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Ja => "ja",
            Self::En => "en",
        }
    }

    /// Picks the Japanese or English text.
    pub fn pick(self, ja: &'static str, en: &'static str) -> &'static str {
        match self {
            Self::Ja => ja,
            Self::En => en,
        }
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page. `body` must already be escaped HTML.
pub fn layout(lang: Lang, title: &str, body: &str) -> String {
    let other = match lang {
        Lang::Ja => r#"<a href="?lang=en" hreflang="en" lang="en">English</a>"#,
        Lang::En => r#"<a href="?lang=ja" hreflang="ja" lang="ja">日本語</a>"#,
    };
    format!(
        r#"<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font-family:"Hiragino Sans","Noto Sans JP","Yu Gothic",sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;line-height:1.7;color:#1a1a1a}}
header{{display:flex;justify-content:space-between;align-items:baseline;border-bottom:2px solid #2a6f97;margin-bottom:1.5rem}}
h1{{font-size:1.4rem}} dl{{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}} dt{{font-weight:bold}}
.notice{{border-left:4px solid #b00020;padding:.5rem 1rem;background:#fff4f4}}
.button,button{{display:inline-block;padding:.5rem 1.2rem;background:#2a6f97;color:#fff;border:0;border-radius:4px;text-decoration:none;font-size:1rem;cursor:pointer}}
</style>
</head>
<body>
<header><span>{brand}</span><nav>{other}</nav></header>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"#,
        lang = lang.code(),
        title = escape(title),
        brand = lang.pick(
            "医師資格証 シングルサインオン",
            "Doctor qualification card sign-on"
        ),
    )
}

/// Text shown to the doctor for a refused or failed login, by stable code.
pub fn login_failure_text(lang: Lang, code: &str) -> (&'static str, &'static str) {
    let ja_en = |ja: &'static str, en: &'static str| lang.pick(ja, en);
    let (title, detail) = match code {
        "expired" => (
            ja_en(
                "証明書の有効期限が切れています",
                "The card certificate has expired",
            ),
            ja_en(
                "医師資格証の電子証明書の有効期限が切れています。日本医師会電子認証センターで更新の手続きをしてください。",
                "The certificate on your doctor qualification card has expired. Please renew it with the JMA certification centre.",
            ),
        ),
        "not_yet_valid" => (
            ja_en(
                "証明書はまだ有効ではありません",
                "The card certificate is not valid yet",
            ),
            ja_en(
                "この電子証明書の有効期間はまだ始まっていません。",
                "The validity period of this certificate has not started yet.",
            ),
        ),
        "revoked" => (
            ja_en(
                "証明書は失効しています",
                "The card certificate has been revoked",
            ),
            ja_en(
                "この電子証明書は認証局により失効されています。紛失・再発行の場合は新しいカードをお使いください。",
                "The certification authority has revoked this certificate. If the card was lost or reissued, use the new card.",
            ),
        ),
        "wrong_key_usage" => (
            ja_en(
                "ログインに使えない証明書です",
                "This certificate cannot be used to log in",
            ),
            ja_en(
                "署名用の電子証明書が選択されました。ブラウザで「認証用」の証明書を選んでください。",
                "The signing certificate was selected. Choose the authentication certificate in your browser.",
            ),
        ),
        "wrong_extended_key_usage" | "policy_not_accepted" => (
            ja_en(
                "ログインに使えない証明書です",
                "This certificate cannot be used to log in",
            ),
            ja_en(
                "この証明書はHPKI認証用の証明書ではありません。",
                "This certificate is not an HPKI authentication certificate.",
            ),
        ),
        "missing_hc_role" | "malformed_hc_role" => (
            ja_en(
                "資格情報を確認できません",
                "The qualification cannot be confirmed",
            ),
            ja_en(
                "証明書に有効な資格情報（hcRole）が含まれていません。",
                "The certificate carries no valid qualification (hcRole).",
            ),
        ),
        "revocation_unavailable" | "revocation_stale" => (
            ja_en(
                "失効情報を確認できません",
                "Revocation status is unavailable",
            ),
            ja_en(
                "証明書の失効情報（CRL）を確認できないため、ログインできません。時間をおいて再度お試しください。",
                "The certificate's revocation list cannot be checked, so the login is refused. Please try again later.",
            ),
        ),
        "rate_limited" => (
            ja_en("しばらくお待ちください", "Please wait a while"),
            ja_en(
                "ログインの失敗が続いたため、一時的にログインを制限しています。",
                "Logins are temporarily blocked after repeated failures.",
            ),
        ),
        "no_doctor_record" => (
            ja_en("登録が見つかりません", "No registration found"),
            ja_en(
                "このカードに対応する医師の登録がありません。管理者にお問い合わせください。",
                "There is no doctor record for this card. Please contact the administrator.",
            ),
        ),
        "request_expired" | "ticket_invalid" => (
            ja_en("ログインの有効時間が過ぎました", "The login has expired"),
            ja_en(
                "もう一度最初からログインしてください。",
                "Please start the login again.",
            ),
        ),
        "binding_mismatch" => (
            ja_en("ログインを完了できません", "The login cannot be completed"),
            ja_en(
                "ログインを開始したブラウザと異なるブラウザからのアクセスです。もう一度ログインしてください。",
                "This is not the browser that started the login. Please log in again.",
            ),
        ),
        "no_certificate" => (
            ja_en("医師資格証が提示されていません", "No card was presented"),
            ja_en(
                "カードリーダーに医師資格証を置き、証明書を選択してPINを入力してください。",
                "Put the card on the reader, choose its certificate and enter the PIN.",
            ),
        ),
        "invalid_return_to" => (
            ja_en("不正な戻り先です", "Invalid return address"),
            ja_en(
                "戻り先のアドレスが正しくありません。",
                "The return address is not valid.",
            ),
        ),
        "store_unavailable" => (
            ja_en("一時的なエラー", "Temporary error"),
            ja_en(
                "システムが一時的に利用できません。時間をおいて再度お試しください。",
                "The system is temporarily unavailable. Please try again later.",
            ),
        ),
        _ => (
            ja_en(
                "証明書を確認できません",
                "The certificate cannot be verified",
            ),
            ja_en(
                "提示された証明書は受け付けられません。",
                "The presented certificate is not accepted.",
            ),
        ),
    };
    (title, detail)
}

/// The name of a claim as the consent page shows it.
pub fn claim_label(lang: Lang, claim: &str) -> &'static str {
    use idp_vocabulary::claim as c;
    let (ja, en) = match claim {
        c::NAME => ("氏名", "Name"),
        c::FAMILY_NAME => ("姓", "Family name"),
        c::GIVEN_NAME => ("名", "Given name"),
        c::GENDER => ("性別", "Gender"),
        c::BIRTHDATE => ("生年月日", "Date of birth"),
        c::AGE => ("年齢", "Age"),
        c::EMAIL => ("メールアドレス", "Email address"),
        c::ADDRESS => ("住所", "Address"),
        c::HPKI_ROLE => ("医師資格（HPKI 資格情報）", "Qualification (HPKI role)"),
        c::HPKI_ISSUER => ("医師資格証の発行者", "Issuer of the card"),
        c::VERIFIED_CLAIMS => (
            "医師資格証で確認された本人情報",
            "Identity verified by the card",
        ),
        c::JMA_MEMBER => ("日本医師会会員であること", "JMA membership"),
        c::JMA_MEMBER_ID => ("日本医師会会員番号", "JMA member ID"),
        c::MEDICAL_ASSOCIATION => ("所属医師会", "Medical association"),
        c::DOCTOR_REGISTRATION_NUMBER => ("医籍登録番号", "Doctor registration number"),
        c::DOCTOR_REGISTRATION_DATE => ("医籍登録年月日", "Doctor registration date"),
        _ => ("その他の情報", "Other information"),
    };
    lang.pick(ja, en)
}

/// Why a required claim is withheld, in the doctor's words.
fn withheld_reason(lang: Lang, why: &idp_core::oidc::release::Withheld) -> String {
    use idp_core::oidc::release::Withheld;
    match why {
        Withheld::DoctorSetting(item) => {
            let (ja, en) = item.label();
            match lang {
                Lang::Ja => format!(
                    "あなたの情報開示設定で、この種類のサービスへの「{ja}」の提供を停止しています。設定を変更すると、次回のログインから提供されます。"
                ),
                Lang::En => format!(
                    "Your disclosure settings withhold “{en}” from this kind of service. If you change the setting, it is provided from your next login."
                ),
            }
        }
        Withheld::PolicyForbids(_) | Withheld::NotPermitted => lang
            .pick(
                "開示ポリシーにより、このサービスには提供されません。",
                "The disclosure policy does not release it to this service.",
            )
            .to_owned(),
        Withheld::PolicyError(_) => lang
            .pick(
                "開示ポリシーを評価できなかったため提供されません。管理者にお問い合わせください。",
                "The disclosure policy could not be evaluated, so it is withheld. Please contact the administrator.",
            )
            .to_owned(),
        Withheld::UnknownClaim => lang
            .pick(
                "この認証基盤が扱わない情報です。",
                "This identity provider does not handle this information.",
            )
            .to_owned(),
        Withheld::NoConsent => lang
            .pick("同意されていません。", "You have not consented.")
            .to_owned(),
    }
}

/// The page shown when a relying party requires claims that are withheld: each claim
/// and why, then `action` (a link or form that returns the refusal to the service).
pub fn required_withheld_body(
    lang: Lang,
    refusal: &idp_core::oidc::release::RequiredWithheld,
    action: &str,
) -> String {
    let mut items = String::new();
    for (claim, why) in &refusal.claims {
        items.push_str(&format!(
            r#"<li data-claim="{}" data-why="{}"><strong>{}</strong>: {}</li>"#,
            escape(claim),
            why.as_str(),
            escape(claim_label(lang, claim)),
            escape(&withheld_reason(lang, why))
        ));
    }
    format!(
        r#"<p class="notice" data-reason="required_claims_withheld"><strong>{rp}</strong> {lead}</p>
<ul class="claims">{items}</ul>
<p>{note}</p>
{action}"#,
        rp = escape(&refusal.relying_party),
        lead = escape(lang.pick(
            "はログインに次の情報を必須としていますが、提供されないためログインできません。",
            "requires the following information to log in, which is not provided, so you cannot log in."
        )),
        note = escape(lang.pick(
            "サービスに戻ると、ログインできなかったことがサービスに伝えられます。",
            "Returning to the service tells it that the login did not happen."
        )),
    )
}

/// The title of that page.
pub fn required_withheld_title(lang: Lang) -> &'static str {
    lang.pick("ログインできません", "You cannot log in")
}
