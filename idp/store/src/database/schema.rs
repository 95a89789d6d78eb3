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
