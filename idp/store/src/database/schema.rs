//! The diesel view of the schema in `migrations/{sqlite,postgres}` (kept by hand: the two
//! migration sets must both match it).

diesel::table! {
    doctors (id) {
        id -> Text,
        hpki_holder_id -> Text,
        family_name -> Text,
        given_name -> Text,
        family_name_kana -> Nullable<Text>,
        given_name_kana -> Nullable<Text>,
        family_name_latin -> Nullable<Text>,
        given_name_latin -> Nullable<Text>,
        gender -> Text,
        birthdate -> Nullable<Text>,
        email -> Nullable<Text>,
        postal_code -> Nullable<Text>,
        prefecture -> Nullable<Text>,
        address -> Nullable<Text>,
        jma_member_id -> Nullable<Text>,
        jma_member -> Bool,
        medical_association_prefecture -> Nullable<Text>,
        medical_association_district -> Nullable<Text>,
        doctor_registration_number -> Nullable<Text>,
        doctor_registration_date -> Nullable<Text>,
        hpki_role -> Nullable<Text>,
        origin -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        last_login_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    oidc_clients (client_id) {
        client_id -> Text,
        registration -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        alg -> Text,
        private_key_pem -> Text,
        created_at -> BigInt,
        active_from -> BigInt,
    }
}

diesel::table! {
    consents (doctor_id, client_id) {
        doctor_id -> Text,
        client_id -> Text,
        scopes -> Text,
        claims -> Text,
        granted_at -> BigInt,
        policy_version -> Nullable<Text>,
    }
}

diesel::table! {
    disclosure_settings (doctor_id, item, audience) {
        doctor_id -> Text,
        item -> Text,
        audience -> Text,
        allowed -> Bool,
        updated_at -> BigInt,
    }
}

diesel::table! {
    refresh_tokens (token_digest) {
        token_digest -> Text,
        family_id -> Text,
        client_id -> Text,
        doctor_id -> Text,
        grant_json -> Text,
        issued_at -> BigInt,
        expires_at -> BigInt,
        family_expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    saml_sps (entity_id) {
        entity_id -> Text,
        metadata -> Text,
        settings -> Text,
        fetched_at -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    audit_log (seq) {
        seq -> BigInt,
        at_micros -> BigInt,
        kind -> Text,
        actor -> Text,
        doctor_id -> Nullable<Text>,
        relying_party -> Nullable<Text>,
        detail -> Text,
        prev_hash -> Text,
        hash -> Text,
    }
}

diesel::table! {
    audit_checkpoints (seq) {
        seq -> BigInt,
        hash -> Text,
        at_micros -> BigInt,
        key_id -> Text,
        signature -> Text,
    }
}

diesel::table! {
    audit_retention (id) {
        id -> Integer,
        days -> Integer,
    }
}
