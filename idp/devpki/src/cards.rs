//! The virtual doctor cards: who they are, what is wrong with the bad ones, and the
//! `doctors.csv` records that go with them.

/// Which certificate a card carries and why it is refused (if it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CardKind {
    Good,
    Expired,
    NotYetValid,
    Revoked,
    SigningCert,
    WrongEku,
    NoHcRole,
    MalformedHcRole,
    UnknownCa,
    SelfSigned,
    IntermediateMissing,
    WrongPolicy,
}

#[derive(Debug, Clone)]
pub(crate) struct CardDef {
    pub(crate) name: &'static str,
    pub(crate) kind: CardKind,
    pub(crate) expect: Option<&'static str>,
    pub(crate) why: &'static str,
    pub(crate) holder_id: &'static str,
    pub(crate) family: &'static str,
    pub(crate) given: &'static str,
    pub(crate) family_kana: &'static str,
    pub(crate) given_kana: &'static str,
    pub(crate) family_latin: &'static str,
    pub(crate) given_latin: &'static str,
    pub(crate) gender: &'static str,
    pub(crate) birthdate: &'static str,
    pub(crate) roles: &'static [&'static str],
    pub(crate) prefecture: &'static str,
    pub(crate) postal_code: &'static str,
    pub(crate) address: &'static str,
    pub(crate) district: &'static str,
}

impl CardDef {
    pub(crate) fn good(&self) -> bool {
        self.kind == CardKind::Good
    }

    /// Family and given name separated by a full-width space (U+3000), as on real cards.
    pub(crate) fn common_name(&self) -> String {
        format!("{}\u{3000}{}", self.family, self.given)
    }

    pub(crate) fn is_doctor(&self) -> bool {
        self.roles.contains(&"Medical Doctor")
    }
}

const MD: &[&str] = &["Medical Doctor"];

#[allow(clippy::too_many_arguments)]
const fn person(
    name: &'static str,
    kind: CardKind,
    expect: Option<&'static str>,
    why: &'static str,
    holder_id: &'static str,
    names: [&'static str; 6],
    gender: &'static str,
    birthdate: &'static str,
    roles: &'static [&'static str],
    place: [&'static str; 4],
) -> CardDef {
    CardDef {
        name,
        kind,
        expect,
        why,
        holder_id,
        family: names[0],
        given: names[1],
        family_kana: names[2],
        given_kana: names[3],
        family_latin: names[4],
        given_latin: names[5],
        gender,
        birthdate,
        roles,
        prefecture: place[0],
        postal_code: place[1],
        address: place[2],
        district: place[3],
    }
}

const OKAYAMA: [&str; 4] = [
    "岡山県",
    "700-0001",
    "岡山市北区表町一丁目1番1号",
    "岡山市医師会",
];
const TOKYO: [&str; 4] = [
    "東京都",
    "113-0033",
    "文京区本郷一丁目1番1号",
    "文京区医師会",
];
const OSAKA: [&str; 4] = [
    "大阪府",
    "530-0001",
    "大阪市北区梅田一丁目1番1号",
    "大阪市医師会",
];

/// All cards, in manifest order. Names, roles and expected refusal codes are part of the
/// public contract (see the crate docs).
pub(crate) fn all() -> Vec<CardDef> {
    use CardKind::*;
    vec![
        person(
            "doctor",
            Good,
            None,
            "valid authentication certificate of a medical doctor",
            "JMA-TEST-000001",
            ["日医", "太郎", "ニチイ", "タロウ", "NICHII", "TARO"],
            "male",
            "1975-04-01",
            MD,
            OKAYAMA,
        ),
        person(
            "dentist",
            Good,
            None,
            "valid authentication certificate of a dentist",
            "JMA-TEST-000002",
            ["歯科", "花子", "シカ", "ハナコ", "SHIKA", "HANAKO"],
            "female",
            "1980-09-15",
            &["Dentist"],
            TOKYO,
        ),
        person(
            "pharmacist",
            Good,
            None,
            "valid authentication certificate of a pharmacist",
            "JMA-TEST-000003",
            ["薬師", "次郎", "ヤクシ", "ジロウ", "YAKUSHI", "JIRO"],
            "male",
            "1988-01-20",
            &["Pharmacist"],
            OSAKA,
        ),
        person(
            "multi-role",
            Good,
            None,
            "valid certificate with two HCActors: Medical Doctor and Director of Hospital",
            "JMA-TEST-000004",
            ["院長", "一郎", "インチョウ", "イチロウ", "INCHO", "ICHIRO"],
            "male",
            "1962-11-03",
            &["Medical Doctor", "Director of Hospital"],
            OKAYAMA,
        ),
        person(
            "expired",
            Expired,
            Some("expired"),
            "validity issued_at-6y .. issued_at-1y: expired before issued_at",
            "JMA-TEST-100001",
            ["期限", "切男", "キゲン", "キリオ", "KIGEN", "KIRIO"],
            "male",
            "1970-05-05",
            MD,
            OKAYAMA,
        ),
        person(
            "not-yet-valid",
            NotYetValid,
            Some("not_yet_valid"),
            "validity issued_at+1y .. issued_at+6y: not valid yet at issued_at",
            "JMA-TEST-100002",
            ["未来", "早子", "ミライ", "ハヤコ", "MIRAI", "HAYAKO"],
            "female",
            "1990-07-07",
            MD,
            TOKYO,
        ),
        person(
            "revoked",
            Revoked,
            Some("revoked"),
            "listed in crl/jma-ca.crl (reason keyCompromise, revoked at issued_at)",
            "JMA-TEST-100003",
            ["失効", "三郎", "シッコウ", "サブロウ", "SHIKKO", "SABURO"],
            "male",
            "1968-03-03",
            MD,
            OSAKA,
        ),
        person(
            "signing-cert",
            SigningCert,
            Some("wrong_key_usage"),
            "the signing (署名用) profile: keyUsage nonRepudiation only, no EKU, sign policy",
            "JMA-TEST-100004",
            ["署名", "四郎", "ショメイ", "シロウ", "SHOMEI", "SHIRO"],
            "male",
            "1972-08-08",
            MD,
            OKAYAMA,
        ),
        person(
            "wrong-eku",
            WrongEku,
            Some("wrong_extended_key_usage"),
            "keyUsage digitalSignature but extendedKeyUsage emailProtection only",
            "JMA-TEST-100005",
            ["用途", "五郎", "ヨウト", "ゴロウ", "YOTO", "GORO"],
            "male",
            "1977-12-12",
            MD,
            TOKYO,
        ),
        person(
            "no-hcrole",
            NoHcRole,
            Some("missing_hc_role"),
            "no subjectDirectoryAttributes (2.5.29.9) extension at all",
            "JMA-TEST-100006",
            ["資格", "無子", "シカク", "ナイコ", "SHIKAKU", "NAIKO"],
            "female",
            "1983-02-14",
            MD,
            OSAKA,
        ),
        person(
            "malformed-hcrole",
            MalformedHcRole,
            Some("malformed_hc_role"),
            "2.5.29.9 present, but the HCActor's codingSchemeReference is [0] INTEGER 1 instead of an OID",
            "JMA-TEST-100007",
            ["破損", "六郎", "ハソン", "ロクロウ", "HASON", "ROKURO"],
            "male",
            "1979-06-06",
            MD,
            OKAYAMA,
        ),
        person(
            "unknown-ca",
            UnknownCa,
            Some("unknown_issuer"),
            "issued by \"Unknown Test Root CA\", which is not a trust anchor",
            "JMA-TEST-100008",
            ["不明", "七郎", "フメイ", "シチロウ", "FUMEI", "SHICHIRO"],
            "male",
            "1981-07-17",
            MD,
            TOKYO,
        ),
        person(
            "self-signed",
            SelfSigned,
            Some("unknown_issuer"),
            "self-signed leaf (CA:false) with the authentication profile",
            "JMA-TEST-100009",
            ["自己", "八郎", "ジコ", "ハチロウ", "JIKO", "HACHIRO"],
            "male",
            "1985-08-18",
            MD,
            OSAKA,
        ),
        person(
            "intermediate-missing",
            IntermediateMissing,
            Some("unknown_issuer"),
            "issued by \"HPKI Test JMA CA 2\" (under the trusted root but not in trust.intermediates); chain.pem and auth.p12 hold only the leaf",
            "JMA-TEST-100010",
            ["中間", "九郎", "チュウカン", "クロウ", "CHUKAN", "KURO"],
            "male",
            "1987-09-19",
            MD,
            OKAYAMA,
        ),
        person(
            "wrong-policy",
            WrongPolicy,
            Some("policy_not_accepted"),
            "authentication profile but certificatePolicies = 2.999.392.9.9 (not an accepted policy)",
            "JMA-TEST-100011",
            ["方針", "十郎", "ホウシン", "ジュウロウ", "HOSHIN", "JURO"],
            "male",
            "1989-10-10",
            MD,
            TOKYO,
        ),
    ]
}

/// The exact `doctors.csv` header.
pub(crate) const CSV_HEADER: &str = "hpki_holder_id,family_name,given_name,family_name_kana,given_name_kana,family_name_latin,given_name_latin,gender,birthdate,email,postal_code,prefecture,address,jma_member_id,jma_member,medical_association_prefecture,medical_association_district,doctor_registration_number,doctor_registration_date,hpki_role";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// One CSV row per card (every card has a holder id, so a refusal is never caused by a
/// missing record). Several roles are joined with `;`.
pub(crate) fn csv(cards: &[CardDef]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for (i, c) in cards.iter().enumerate() {
        let n = i + 1;
        let doctor = c.is_doctor();
        let jma_member = doctor && c.kind != CardKind::UnknownCa;
        let jma_member_id = if jma_member {
            format!("JMA-M-{n:07}")
        } else {
            String::new()
        };
        let (reg_no, reg_date) = if doctor {
            (format!("{:06}", 400_000 + n), format!("{}-04-20", 2000 + n))
        } else {
            (String::new(), String::new())
        };
        let (assoc_pref, assoc_district) = if jma_member {
            (format!("{}医師会", c.prefecture), c.district.to_owned())
        } else {
            (String::new(), String::new())
        };
        let fields = [
            c.holder_id.to_owned(),
            c.family.to_owned(),
            c.given.to_owned(),
            c.family_kana.to_owned(),
            c.given_kana.to_owned(),
            c.family_latin.to_owned(),
            c.given_latin.to_owned(),
            c.gender.to_owned(),
            c.birthdate.to_owned(),
            format!("{}@test.invalid", c.name),
            c.postal_code.to_owned(),
            c.prefecture.to_owned(),
            c.address.to_owned(),
            jma_member_id,
            jma_member.to_string(),
            assoc_pref,
            assoc_district,
            reg_no,
            reg_date,
            c.roles.join(";"),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}
