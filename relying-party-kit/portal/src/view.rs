//! The portal's pages: server-rendered HTML, Japanese first (English with `?lang=en`),
//! with landmarks, captions, header cells and labels for assistive technology. Every
//! value from the IdP is escaped.

use std::fmt::Write as _;

use hpki_rp_kit::idp_vocabulary::claim;
use hpki_rp_kit::web::escape;
use hpki_rp_kit::{Consent, DisclosureEntry, DisclosureSettings, Doctor};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The page language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Ja,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Self::Ja => "ja",
            Self::En => "en",
        }
    }

    /// The Japanese or the English text.
    pub fn t<'a>(self, ja: &'a str, en: &'a str) -> &'a str {
        match self {
            Self::Ja => ja,
            Self::En => en,
        }
    }
}

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Home,
    Profile,
    Settings,
    Consents,
    History,
}

const NAV: [(Section, &str, &str, &str); 4] = [
    (Section::Profile, "/profile", "プロフィール", "My profile"),
    (
        Section::Settings,
        "/settings",
        "情報開示設定",
        "Disclosure settings",
    ),
    (Section::Consents, "/consents", "同意の管理", "Consents"),
    (
        Section::History,
        "/history",
        "開示履歴",
        "Disclosure history",
    ),
];

/// What every page needs besides its content.
#[derive(Debug)]
pub struct Frame<'a> {
    pub lang: Lang,
    pub section: Section,
    /// The current path (for the language switch).
    pub path: &'a str,
    /// The session's anti-CSRF token when signed in (for the logout form).
    pub csrf: Option<&'a str>,
}

/// A whole page around `content`.
pub fn layout(frame: &Frame<'_>, title: &str, content: &str) -> String {
    let l = frame.lang;
    let mut nav = String::new();
    if frame.csrf.is_some() {
        nav.push_str("<nav aria-label=\"");
        nav.push_str(l.t("メインメニュー", "Main menu"));
        nav.push_str("\"><ul>");
        for (section, href, ja, en) in NAV {
            let current = if section == frame.section {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(
                nav,
                "<li><a href=\"{href}\"{current}>{}</a></li>",
                l.t(ja, en)
            );
        }
        nav.push_str("</ul></nav>");
    }
    let logout = frame
        .csrf
        .map(|csrf| {
            format!(
                "<form method=\"post\" action=\"/auth/logout\" class=\"logout\">\
<input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">{}</button></form>",
                escape(csrf),
                l.t("ログアウト", "Log out")
            )
        })
        .unwrap_or_default();
    let (other, other_label) = match l {
        Lang::Ja => ("en", "English"),
        Lang::En => ("ja", "日本語"),
    };
    let switch = format!(
        "<a href=\"{}?lang={other}\" lang=\"{other}\" hreflang=\"{other}\">{other_label}</a>",
        escape(frame.path)
    );
    format!(
        "<!doctype html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} | {site}</title><style>{STYLE}</style></head>\n<body>\
<a class=\"skip\" href=\"#main\">{skip}</a>\
<header><p class=\"site\">{site}</p>{switch}{logout}{nav}</header>\
<main id=\"main\"><h1>{title}</h1>\n{content}\n</main></body></html>\n",
        lang = l.code(),
        site = l.t("医師資格証ポータル", "Doctor Qualification Card Portal"),
        skip = l.t("本文へ移動", "Skip to content"),
        title = escape(title),
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:0 1rem;line-height:1.6}\
.skip{position:absolute;left:-999px}.skip:focus{left:1rem}header{border-bottom:1px solid #999;padding:.5rem 0}\
nav ul{list-style:none;padding:0;display:flex;gap:1rem;flex-wrap:wrap}[aria-current]{font-weight:bold}\
.logout{display:inline;margin-left:1rem}table{border-collapse:collapse;margin:1rem 0}\
th,td{border:1px solid #999;padding:.3rem .6rem;text-align:left}caption{text-align:left;font-weight:bold}\
.status{border:2px solid #2a7;padding:.5rem}.alert{border:2px solid #c33;padding:.5rem}\
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}";

/// A `role=status` message (after a change) or nothing.
pub fn status(message: Option<&str>) -> String {
    message
        .map(|m| format!("<p class=\"status\" role=\"status\">{}</p>", escape(m)))
        .unwrap_or_default()
}

/// The public welcome page.
pub fn welcome(frame: &Frame<'_>, signed_in: Option<&Doctor>) -> String {
    let l = frame.lang;
    let body = match signed_in {
        Some(doctor) => format!(
            "<p>{}</p><p><a href=\"/profile\">{}</a></p>",
            escape(&format!(
                "{}{}",
                doctor.name.for_display().unwrap_or_default(),
                l.t(" 先生、ログインしています。", ": you are logged in.")
            )),
            l.t("プロフィールへ", "Go to your profile")
        ),
        None => format!(
            "<p>{}</p><p><a class=\"button\" href=\"/auth/login?return_to=%2Fprofile\" data-action=\"login\">{}</a></p>",
            l.t(
                "医師資格証（HPKIカード）で本人確認をして、ご自身の情報と、その提供先を確認・設定できます。",
                "Sign in with your doctor qualification card (HPKI card) to see your information and control who receives it."
            ),
            l.t("医師資格証でログイン", "Log in with your doctor qualification card")
        ),
    };
    layout(frame, l.t("ようこそ", "Welcome"), &body)
}

fn date(t: Option<OffsetDateTime>, l: Lang) -> String {
    t.map(|t| {
        let t = t.to_offset(time::macros::offset!(+9));
        match l {
            Lang::Ja => format!("{}年{}月{}日", t.year(), u8::from(t.month()), t.day()),
            Lang::En => format!("{}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
        }
    })
    .unwrap_or_else(|| "—".to_owned())
}

fn datetime(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::macros::offset!(+9));
    format!(
        "{}-{:02}-{:02} {:02}:{:02} JST",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

fn rfc3339_display(value: &str) -> String {
    OffsetDateTime::parse(value, &Rfc3339)
        .map(datetime)
        .unwrap_or_else(|_| value.to_owned())
}

/// My profile: the identity the IdP released, the HPKI role and the card certificate.
pub fn profile(frame: &Frame<'_>, doctor: &Doctor) -> String {
    let l = frame.lang;
    let none = || "—".to_owned();
    let role = doctor
        .hpki_role
        .as_ref()
        .map(|r| match l {
            Lang::Ja => format!(
                "{}（{}）",
                r.japanese_name().unwrap_or(r.display_name()),
                r.display_name()
            ),
            Lang::En => r.display_name().to_owned(),
        })
        .unwrap_or_else(none);
    let login = if doctor.is_hpki_card_login() {
        l.t("医師資格証とPIN", "Doctor qualification card and PIN")
    } else {
        l.t("その他", "Other")
    };
    let cert = doctor.certificate.as_ref();
    let association = doctor
        .medical_association
        .as_ref()
        .map(|a| {
            [a.prefecture.as_deref(), a.district.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" / ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(none);
    let rows: Vec<(&str, String, &str)> = vec![
        (
            l.t("氏名", "Name"),
            doctor
                .name
                .kanji
                .clone()
                .or(doctor.name.default.clone())
                .unwrap_or_else(none),
            "name",
        ),
        (
            l.t("フリガナ", "Reading"),
            doctor.name.kana.clone().unwrap_or_else(none),
            "kana",
        ),
        (
            l.t("資格（HPKI役割）", "Qualification (HPKI role)"),
            role,
            "hpki_role",
        ),
        (
            l.t("証明書の発行者", "Certificate issuer"),
            doctor.hpki_issuer.clone().unwrap_or_else(none),
            "hpki_issuer",
        ),
        (
            l.t("証明書の有効期間（開始）", "Certificate valid from"),
            date(cert.and_then(|c| c.not_before), l),
            "not_before",
        ),
        (
            l.t("証明書の有効期間（終了）", "Certificate valid until"),
            date(cert.and_then(|c| c.not_after), l),
            "not_after",
        ),
        (
            l.t("証明書のシリアル番号", "Certificate serial number"),
            cert.and_then(|c| c.serial_number.clone())
                .unwrap_or_else(none),
            "serial",
        ),
        (
            l.t("ログイン方法", "Login method"),
            login.to_owned(),
            "login_method",
        ),
        (
            l.t("ログイン日時", "Logged in at"),
            doctor.auth_time.map(datetime).unwrap_or_else(none),
            "auth_time",
        ),
        (
            l.t("医師登録番号", "Doctor registration number"),
            doctor
                .doctor_registration_number
                .clone()
                .unwrap_or_else(none),
            "doctor_registration_number",
        ),
        (
            l.t("医師登録年月日", "Doctor registration date"),
            doctor.doctor_registration_date.clone().unwrap_or_else(none),
            "doctor_registration_date",
        ),
        (
            l.t("日医会員ID", "JMA member ID"),
            doctor.jma_member_id.clone().unwrap_or_else(none),
            "jma_member_id",
        ),
        (
            l.t("所属医師会", "Medical association"),
            association,
            "medical_association",
        ),
        (
            l.t("メールアドレス", "Email address"),
            doctor.email.clone().unwrap_or_else(none),
            "email",
        ),
    ];
    let mut table = format!(
        "<table><caption>{}</caption><tbody>",
        l.t(
            "認証サーバー（IdP）から提供されたあなたの情報",
            "Your information as the identity provider released it"
        )
    );
    for (label, value, key) in rows {
        let _ = write!(
            table,
            "<tr data-field=\"{key}\"><th scope=\"row\">{}</th><td>{}</td></tr>",
            escape(label),
            escape(&value)
        );
    }
    table.push_str("</tbody></table>");
    layout(frame, l.t("プロフィール", "My profile"), &table)
}

/// The audience labels and the plain-words meaning of each.
fn audience(l: Lang, audience: &str) -> (String, String) {
    let (ja, en, ja_help, en_help) = match audience {
        "regional_network" => (
            "地域医療連携ネットワーク",
            "Regional care networks",
            "晴れやかネット、いばらき安心ネット、まめネットなど、地域の医療連携サービスです。",
            "Regional care networks such as Hareyaka-net, iSN and Mame-net.",
        ),
        "jma_service" => (
            "日本医師会のサービス",
            "JMA services",
            "このポータル、生涯教育（単位管理）、文書交換など、日本医師会が提供するサービスです。",
            "JMA's own services: this portal, CME credits, document exchange.",
        ),
        "third_party" => (
            "その他の事業者",
            "Other services",
            "上記以外の事業者のサービスです。",
            "Services of any other provider.",
        ),
        other => (other, other, "", ""),
    };
    (l.t(ja, en).to_owned(), l.t(ja_help, en_help).to_owned())
}

/// 情報開示設定: item × audience checkboxes, with what each choice means.
pub fn settings(frame: &Frame<'_>, settings: &DisclosureSettings, message: Option<&str>) -> String {
    let l = frame.lang;
    let csrf = frame.csrf.unwrap_or_default();
    let mut out = status(message);
    let _ = write!(
        out,
        "<p>{}</p><ul>",
        l.t(
            "チェックを付けた項目は、その種類のサービスにログインしたときに提供されます。チェックを外した項目は提供されません。資格（HPKI役割）は本人確認そのものなので、常に提供されます。変更は次回のログインから反映されます。",
            "A ticked item is released when you log in to that kind of service; an unticked one is not. Your qualification (HPKI role) is what the login proves, so it is always released. Changes apply from your next login."
        )
    );
    for a in &settings.audiences {
        let (label, help) = audience(l, a);
        let _ = write!(
            out,
            "<li><strong>{}</strong>: {}</li>",
            escape(&label),
            escape(&help)
        );
    }
    out.push_str("</ul>");
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/settings\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<table><caption>{}</caption><thead><tr><th scope=\"col\">{}</th>",
        escape(csrf),
        l.t("項目ごとの提供先", "Who receives each item"),
        l.t("項目", "Item")
    );
    for a in &settings.audiences {
        let _ = write!(out, "<th scope=\"col\">{}</th>", escape(&audience(l, a).0));
    }
    out.push_str("</tr></thead><tbody>");
    for item in &settings.items {
        let label = l.t(&item.ja, &item.en);
        let _ = write!(out, "<tr><th scope=\"row\">{}</th>", escape(label));
        for a in &settings.audiences {
            let checked = if settings.allowed(&item.item, a).unwrap_or(false) {
                " checked"
            } else {
                ""
            };
            let name = format!("{}:{}", item.item, a);
            let _ = write!(
                out,
                "<td><input type=\"checkbox\" id=\"{n}\" name=\"allow\" value=\"{n}\"{checked}>\
<label for=\"{n}\" class=\"sr\">{} — {}</label></td>",
                escape(label),
                escape(&audience(l, a).0),
                n = escape(&name),
            );
        }
        out.push_str("</tr>");
    }
    let _ = write!(
        out,
        "</tbody></table><button type=\"submit\">{}</button></form>",
        l.t("保存する", "Save")
    );
    layout(frame, l.t("情報開示設定", "Disclosure settings"), &out)
}

/// A claim's label for the doctor (by the vocabulary's names; language variants fold
/// into their claim).
pub fn claim_label(l: Lang, name: &str) -> String {
    let base = name.split('#').next().unwrap_or(name);
    let (ja, en) = match base {
        claim::NAME | claim::FAMILY_NAME | claim::GIVEN_NAME => ("氏名", "Name"),
        claim::GENDER => ("性別", "Gender"),
        claim::BIRTHDATE => ("生年月日", "Date of birth"),
        claim::AGE => ("年齢", "Age"),
        claim::EMAIL => ("メールアドレス", "Email address"),
        claim::ADDRESS => ("住所", "Address"),
        claim::HPKI_ROLE => ("資格（HPKI役割）", "Qualification (HPKI role)"),
        claim::HPKI_ISSUER => ("証明書の発行者", "Certificate issuer"),
        claim::VERIFIED_CLAIMS => ("確認済みの本人情報", "Verified identity"),
        claim::JMA_MEMBER | claim::JMA_MEMBER_ID => ("日医会員ID", "JMA member ID"),
        claim::MEDICAL_ASSOCIATION => ("所属医師会", "Medical association"),
        claim::DOCTOR_REGISTRATION_NUMBER => ("医師登録番号", "Doctor registration number"),
        claim::DOCTOR_REGISTRATION_DATE => ("医師登録年月日", "Doctor registration date"),
        other => (other, other),
    };
    l.t(ja, en).to_owned()
}

/// The claims as labels, each item once, in the order given.
fn claim_labels(l: Lang, claims: &[String]) -> String {
    let mut labels: Vec<String> = Vec::new();
    for c in claims {
        let label = claim_label(l, c);
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    labels.join(l.t("、", ", "))
}

/// Consents: the relying parties the doctor consented to, what each receives, withdraw.
pub fn consents(frame: &Frame<'_>, consents: &[Consent], message: Option<&str>) -> String {
    let l = frame.lang;
    let mut out = status(message);
    let _ = write!(
        out,
        "<p>{}</p>",
        l.t(
            "あなたが情報の提供に同意したサービスです。同意を取り消すと、そのサービスは次回のログインで改めて同意を求め、それまで発行済みの更新トークンは使えなくなります。",
            "Services you agreed to share information with. Withdrawing a consent makes the service ask again at your next login and ends its refresh tokens."
        )
    );
    if consents.is_empty() {
        out.push_str(&empty(
            "consents",
            l.t(
                "同意しているサービスはありません。",
                "You have not consented to any service.",
            ),
        ));
        return layout(frame, l.t("同意の管理", "Consents"), &out);
    }
    out.push_str(&table_head(
        l.t("同意しているサービス", "Services you consented to"),
        &[
            l.t("サービス", "Service"),
            l.t("提供する情報", "Information released"),
            l.t("同意した日時", "Consented at"),
            l.t("操作", "Action"),
        ],
    ));
    for c in consents {
        let _ = write!(
            out,
            "<tr data-relying-party=\"{rp}\"><th scope=\"row\">{name}</th><td>{claims}</td><td>{at}</td><td>\
<form method=\"post\" action=\"/consents/withdraw\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"relying_party\" value=\"{rp}\"><button type=\"submit\" aria-label=\"{aria}\">{button}</button></form></td></tr>",
            rp = escape(&c.relying_party),
            name = escape(&c.name),
            claims = escape(&claim_labels(l, &c.claims)),
            at = escape(&rfc3339_display(&c.granted_at)),
            csrf = escape(frame.csrf.unwrap_or_default()),
            aria = escape(&format!(
                "{} {}",
                c.name,
                l.t("への同意を取り消す", "— withdraw consent")
            )),
            button = l.t("同意を取り消す", "Withdraw"),
        );
    }
    out.push_str("</tbody></table>");
    layout(frame, l.t("同意の管理", "Consents"), &out)
}

fn event_label(l: Lang, kind: &str) -> String {
    let (ja, en) = match kind {
        "release" => ("情報の提供", "Information released"),
        "consent.given" => ("同意", "Consent given"),
        "consent.revoked" => ("同意の取り消し", "Consent withdrawn"),
        "login.success" => ("ログイン", "Login"),
        "login.failure" => ("ログイン失敗", "Failed login"),
        "token.issued" => ("トークン発行", "Token issued"),
        "token.revoked" => ("トークン失効", "Token revoked"),
        "settings.changed" => ("情報開示設定の変更", "Disclosure settings changed"),
        other => (other, other),
    };
    l.t(ja, en).to_owned()
}

/// 開示履歴: the doctor's own audit records, newest first, paged.
pub fn history(frame: &Frame<'_>, entries: &[DisclosureEntry], next_before: Option<i64>) -> String {
    let l = frame.lang;
    let mut out = format!(
        "<p>{}</p>",
        l.t(
            "どのサービスに、いつ、どの項目を提供したかの記録です（新しい順）。記録は改ざんを検出できる形で1年以上保存されます。",
            "What was released to which service and when, newest first. The records are kept tamper-evident for at least a year."
        )
    );
    if entries.is_empty() {
        out.push_str(&empty("history", l.t("記録はありません。", "No records.")));
        return layout(frame, l.t("開示履歴", "Disclosure history"), &out);
    }
    out.push_str(&table_head(
        l.t("開示の記録", "Disclosure records"),
        &[
            l.t("日時", "When"),
            l.t("できごと", "Event"),
            l.t("サービス", "Service"),
            l.t("項目", "Items"),
        ],
    ));
    for e in entries {
        let claims: Vec<String> = e
            .detail
            .get("claims")
            .and_then(|c| c.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let service = e
            .relying_party_name
            .as_deref()
            .or(e.relying_party.as_deref())
            .unwrap_or_default();
        let _ = write!(
            out,
            "<tr data-kind=\"{kind}\" data-relying-party=\"{rp}\"><td>{at}</td><td>{event}</td><td>{service}</td><td>{claims}</td></tr>",
            kind = escape(&e.kind),
            rp = escape(e.relying_party.as_deref().unwrap_or_default()),
            at = escape(&rfc3339_display(&e.at)),
            event = escape(&event_label(l, &e.kind)),
            service = escape(service),
            claims = escape(&if claims.is_empty() {
                setting_changes(l, &e.detail)
            } else {
                claim_labels(l, &claims)
            }),
        );
    }
    out.push_str("</tbody></table>");
    if let Some(before) = next_before {
        let _ = write!(
            out,
            "<p><a href=\"/history?before={before}&amp;lang={}\" rel=\"next\">{}</a></p>",
            l.code(),
            l.t("さらに古い記録", "Older records")
        );
    }
    layout(frame, l.t("開示履歴", "Disclosure history"), &out)
}

/// A settings change in words: `メールアドレス（地域医療連携ネットワーク）: 提供しない`. The
/// item names are the vocabulary's claim names, labelled like claims.
fn setting_changes(l: Lang, detail: &serde_json::Value) -> String {
    let Some(changes) = detail.get("changes").and_then(|c| c.as_array()) else {
        return String::new();
    };
    changes
        .iter()
        .filter_map(|c| {
            let item = c.get("item")?.as_str()?;
            let audience_name = audience(l, c.get("audience")?.as_str()?).0;
            let allowed = c.get("allowed")?.as_bool()?;
            let verdict = if allowed {
                l.t("提供する", "released")
            } else {
                l.t("提供しない", "withheld")
            };
            Some(match l {
                Lang::Ja => format!("{}（{audience_name}）: {verdict}", claim_label(l, item)),
                Lang::En => format!("{} ({audience_name}): {verdict}", claim_label(l, item)),
            })
        })
        .collect::<Vec<_>>()
        .join(l.t("、", "; "))
}

/// The start of a table with a caption and column headers, up to `<tbody>`.
fn table_head(caption: &str, columns: &[&str]) -> String {
    let mut out = format!("<table><caption>{}</caption><thead><tr>", escape(caption));
    for c in columns {
        let _ = write!(out, "<th scope=\"col\">{}</th>", escape(c));
    }
    out.push_str("</tr></thead><tbody>");
    out
}

/// What a list page says when there is nothing to list.
fn empty(what: &str, text: &str) -> String {
    format!("<p data-empty=\"{what}\">{}</p>", escape(text))
}

/// A page for a failure of the IdP's API.
pub fn problem(frame: &Frame<'_>, ja: &str, en: &str) -> String {
    let l = frame.lang;
    layout(
        frame,
        l.t("処理できませんでした", "Something went wrong"),
        &format!(
            "<p class=\"alert\" role=\"alert\">{}</p>",
            escape(l.t(ja, en))
        ),
    )
}
