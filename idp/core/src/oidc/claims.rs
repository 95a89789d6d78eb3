//! Claims by scope (DESIGN.md §4, OIDC Core §5.1, §5.4) from the doctor record and the card.
//! This is what a relying party *may* receive; what it *does* receive is decided by the
//! release decision (requested ∩ consented, and later the disclosure policy).

use idp_vocabulary::{claim, scope};
use serde_json::{Map, Value, json};

use crate::doctor::DoctorProfile;
use crate::session::CardSummary;

/// The calendar date in Japan (JST, UTC+9) at `now`: the day ages are counted on.
pub fn japan_date(now: time::OffsetDateTime) -> time::Date {
    now.to_offset(time::macros::offset!(+9)).date()
}

/// Whole years from `birthdate` to `today` (a birthday on 29 February falls on 1 March
/// in other years); `None` for a birth date after `today`.
pub fn age_on(birthdate: time::Date, today: time::Date) -> Option<u32> {
    let mut years = today.year() - birthdate.year();
    if (today.month() as u8, today.day()) < (birthdate.month() as u8, birthdate.day()) {
        years -= 1;
    }
    u32::try_from(years).ok()
}

/// The claims of `scopes` for a doctor, without `sub` (which depends on the client).
/// Absent values are omitted, never sent as empty strings.
pub fn claims_for_scopes(
    profile: &DoctorProfile,
    card: Option<&CardSummary>,
    scopes: &[String],
    today: time::Date,
) -> Map<String, Value> {
    let mut out = Map::new();
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            out.insert(name.to_owned(), value);
        }
    };
    let text = |v: &Option<String>| v.as_ref().filter(|s| !s.is_empty()).map(|s| json!(s));
    let has = |s: &str| scopes.iter().any(|x| x == s);
    if has(scope::PROFILE) {
        put(claim::NAME, Some(json!(profile.full_name())));
        put(
            claim::FAMILY_NAME,
            latin_or(&profile.family_name_latin, &profile.family_name),
        );
        put(
            claim::GIVEN_NAME,
            latin_or(&profile.given_name_latin, &profile.given_name),
        );
        let kanji = |n: &str| format!("{n}#{}", claim::LANG_KANJI);
        let kana = |n: &str| format!("{n}#{}", claim::LANG_KANA);
        put(&kanji(claim::NAME), Some(json!(profile.full_name())));
        put(&kanji(claim::FAMILY_NAME), Some(json!(profile.family_name)));
        put(&kanji(claim::GIVEN_NAME), Some(json!(profile.given_name)));
        if let (Some(f), Some(g)) = (&profile.family_name_kana, &profile.given_name_kana) {
            put(&kana(claim::NAME), Some(json!(format!("{f}\u{3000}{g}"))));
        }
        put(&kana(claim::FAMILY_NAME), text(&profile.family_name_kana));
        put(&kana(claim::GIVEN_NAME), text(&profile.given_name_kana));
        let gender = profile.gender.as_str();
        put(claim::GENDER, (gender != "unknown").then(|| json!(gender)));
        put(
            claim::BIRTHDATE,
            profile.birthdate.map(|d| json!(d.to_string())),
        );
        put(
            claim::AGE,
            profile
                .birthdate
                .and_then(|d| age_on(d, today))
                .map(|a| json!(a)),
        );
    }
    if has(scope::EMAIL) {
        put(claim::EMAIL, text(&profile.email));
    }
    if has(scope::ADDRESS) {
        let mut address = Map::new();
        for (key, value) in [
            ("street_address", &profile.address),
            ("region", &profile.prefecture),
            ("postal_code", &profile.postal_code),
        ] {
            if let Some(v) = value.as_ref().filter(|s| !s.is_empty()) {
                address.insert(key.to_owned(), json!(v));
            }
        }
        if !address.is_empty() {
            address.insert("country".to_owned(), json!("JP"));
            put(claim::ADDRESS, Some(Value::Object(address)));
        }
    }
    if let Some(card) = card.filter(|_| has(scope::HPKI)) {
        put(claim::HPKI_ROLE, card.roles.first().map(|r| json!(r)));
        put(claim::HPKI_ISSUER, Some(json!(card.issuer)));
    }
    if has(scope::JMA) {
        put(claim::JMA_MEMBER, Some(json!(profile.jma_member)));
        put(claim::JMA_MEMBER_ID, text(&profile.jma_member_id));
        let mut association = Map::new();
        if let Some(p) = text(&profile.medical_association_prefecture) {
            association.insert("prefecture".into(), p);
        }
        if let Some(d) = text(&profile.medical_association_district) {
            association.insert("district".into(), d);
        }
        if !association.is_empty() {
            put(claim::MEDICAL_ASSOCIATION, Some(Value::Object(association)));
        }
    }
    if has(scope::DOCTOR_REGISTRATION) {
        put(
            claim::DOCTOR_REGISTRATION_NUMBER,
            text(&profile.doctor_registration_number),
        );
        put(
            claim::DOCTOR_REGISTRATION_DATE,
            profile
                .doctor_registration_date
                .map(|d| json!(d.to_string())),
        );
    }
    out
}

/// The Latin name when recorded, else the kanji one (the default-language `family_name`).
fn latin_or(latin: &Option<String>, kanji: &str) -> Option<Value> {
    Some(json!(
        latin.as_deref().filter(|s| !s.is_empty()).unwrap_or(kanji)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Gender;

    fn profile() -> DoctorProfile {
        DoctorProfile {
            hpki_holder_id: "JMA-TEST-000001".into(),
            family_name: "日医".into(),
            given_name: "太郎".into(),
            family_name_kana: Some("ニチイ".into()),
            given_name_kana: Some("タロウ".into()),
            family_name_latin: Some("Nichii".into()),
            given_name_latin: Some("Taro".into()),
            gender: Gender::Male,
            birthdate: Some(time::macros::date!(1970 - 04 - 01)),
            email: Some("taro@example.jp".into()),
            postal_code: Some("700-0001".into()),
            prefecture: Some("岡山県".into()),
            address: Some("岡山市北区1-1".into()),
            jma_member_id: Some("12345".into()),
            jma_member: true,
            medical_association_prefecture: Some("岡山県医師会".into()),
            medical_association_district: None,
            doctor_registration_number: Some("123456".into()),
            doctor_registration_date: Some(time::macros::date!(1996 - 05 - 01)),
            hpki_role: Some("Medical Doctor".into()),
        }
    }

    const TODAY: time::Date = time::macros::date!(2026 - 11 - 24);

    #[test]
    fn age_counts_whole_years_on_the_japanese_calendar_day() {
        use time::macros::{date, datetime};
        let born = date!(1970 - 04 - 01);
        assert_eq!(age_on(born, date!(2026 - 03 - 31)), Some(55));
        assert_eq!(age_on(born, date!(2026 - 04 - 01)), Some(56));
        let leap = date!(2000 - 02 - 29);
        assert_eq!(age_on(leap, date!(2025 - 02 - 28)), Some(24));
        assert_eq!(age_on(leap, date!(2025 - 03 - 01)), Some(25));
        assert_eq!(age_on(born, date!(1969 - 12 - 31)), None);
        // 15:30 UTC is already the next day in Japan.
        assert_eq!(
            japan_date(datetime!(2026-11-24 15:30 UTC)),
            date!(2026 - 11 - 25)
        );
        let c = claims_for_scopes(&profile(), None, &scopes(&["profile"]), TODAY);
        assert_eq!(c["age"], 56);
    }

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn each_scope_releases_only_its_claims() {
        let openid_only = claims_for_scopes(&profile(), None, &scopes(&["openid"]), TODAY);
        assert!(openid_only.is_empty());
        let email = claims_for_scopes(&profile(), None, &scopes(&["openid", "email"]), TODAY);
        assert_eq!(email.keys().collect::<Vec<_>>(), vec!["email"]);
    }

    #[test]
    fn profile_has_japanese_name_variants() {
        let c = claims_for_scopes(&profile(), None, &scopes(&["openid", "profile"]), TODAY);
        assert_eq!(c["name"], "日医\u{3000}太郎");
        assert_eq!(c["family_name"], "Nichii");
        assert_eq!(c["family_name#ja-Hani-JP"], "日医");
        assert_eq!(c["given_name#ja-Kana-JP"], "タロウ");
        assert_eq!(c["name#ja-Kana-JP"], "ニチイ\u{3000}タロウ");
        assert_eq!(c["gender"], "male");
        assert_eq!(c["birthdate"], "1970-04-01");
    }

    #[test]
    fn address_region_is_the_prefecture_and_absent_values_are_omitted() {
        let c = claims_for_scopes(&profile(), None, &scopes(&["address", "jma"]), TODAY);
        assert_eq!(c["address"]["region"], "岡山県");
        assert_eq!(c["address"]["country"], "JP");
        assert_eq!(
            c["medical_association"],
            json!({"prefecture": "岡山県医師会"})
        );
        let bare = DoctorProfile {
            hpki_holder_id: "x".into(),
            family_name: "日医".into(),
            given_name: "太郎".into(),
            ..DoctorProfile::default()
        };
        let c = claims_for_scopes(
            &bare,
            None,
            &scopes(&["profile", "email", "address", "doctor_registration"]),
            TODAY,
        );
        assert!(
            !c.contains_key("email") && !c.contains_key("address") && !c.contains_key("gender")
        );
        assert!(!c.contains_key("doctor_registration_number"));
        assert_eq!(c["family_name"], "日医");
    }

    #[test]
    fn hpki_claims_come_from_the_card_of_the_session() {
        let card = CardSummary {
            holder_id: "JMA-TEST-000001".into(),
            subject: "CN=日医　太郎".into(),
            issuer: "CN=HPKI Test JMA CA".into(),
            serial: "01".into(),
            roles: vec!["Medical Doctor".into(), "Director of Hospital".into()],
            not_before: time::OffsetDateTime::UNIX_EPOCH,
            not_after: time::OffsetDateTime::UNIX_EPOCH,
            fingerprint: "00".into(),
            revocation: vec![],
        };
        let c = claims_for_scopes(&profile(), Some(&card), &scopes(&["openid", "hpki"]), TODAY);
        assert_eq!(c["hpki_role"], "Medical Doctor");
        assert_eq!(c["hpki_issuer"], "CN=HPKI Test JMA CA");
        assert!(claims_for_scopes(&profile(), None, &scopes(&["hpki"]), TODAY).is_empty());
        assert!(
            claims_for_scopes(&profile(), Some(&card), &scopes(&["profile"]), TODAY)
                .get("hpki_role")
                .is_none()
        );
    }
}
