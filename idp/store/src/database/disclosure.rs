//! [`DisclosureSettingsStore`] over the `disclosure_settings` table: one row per item and
//! audience a doctor has set.

use async_trait::async_trait;
use diesel::prelude::*;
use idp_core::disclosure::{Audience, DisclosureSettings, Item, Setting};
use idp_core::doctor::DoctorId;
use idp_core::store::{DisclosureSettingsStore, StoreError};
use time::OffsetDateTime;

use super::doctors::db_error;
use super::schema::disclosure_settings;
use super::{Database, write_transaction};

/// A row of `disclosure_settings`, in column order.
#[derive(Queryable, Insertable, Debug)]
#[diesel(table_name = disclosure_settings)]
struct SettingRow {
    doctor_id: String,
    item: String,
    audience: String,
    allowed: bool,
    updated_at: i64,
}

impl SettingRow {
    fn into_setting(self) -> Result<Setting, StoreError> {
        let corrupt = |column: &str, value: &str| {
            StoreError::Corrupt(format!(
                "disclosure setting of doctor {}: column {column} has the unknown value {value:?}",
                self.doctor_id
            ))
        };
        Ok(Setting {
            item: Item::parse(&self.item).ok_or_else(|| corrupt("item", &self.item))?,
            audience: Audience::parse(&self.audience)
                .ok_or_else(|| corrupt("audience", &self.audience))?,
            allowed: self.allowed,
        })
    }
}

#[async_trait]
impl DisclosureSettingsStore for Database {
    async fn settings_of(&self, doctor: &DoctorId) -> Result<DisclosureSettings, StoreError> {
        let doctor = doctor.as_str().to_owned();
        self.run(move |conn| {
            let rows = disclosure_settings::table
                .filter(disclosure_settings::doctor_id.eq(doctor))
                .load::<SettingRow>(conn)
                .map_err(db_error)?;
            let settings = rows
                .into_iter()
                .map(SettingRow::into_setting)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(DisclosureSettings::from_settings(settings))
        })
        .await
    }

    async fn put_settings(
        &self,
        doctor: &DoctorId,
        settings: &[Setting],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let rows: Vec<SettingRow> = settings
            .iter()
            .map(|s| SettingRow {
                doctor_id: doctor.as_str().to_owned(),
                item: s.item.as_str().to_owned(),
                audience: s.audience.as_str().to_owned(),
                allowed: s.allowed,
                updated_at: now.unix_timestamp(),
            })
            .collect();
        self.run(move |conn| {
            // No upsert clause through MultiBackend: update, else insert; an unknown
            // doctor violates the foreign key (a Conflict) and nothing is written.
            write_transaction(conn, |conn| {
                for row in &rows {
                    let updated = diesel::update(disclosure_settings::table.find((
                        row.doctor_id.as_str(),
                        row.item.as_str(),
                        row.audience.as_str(),
                    )))
                    .set((
                        disclosure_settings::allowed.eq(row.allowed),
                        disclosure_settings::updated_at.eq(row.updated_at),
                    ))
                    .execute(conn)
                    .map_err(db_error)?;
                    if updated == 0 {
                        diesel::insert_into(disclosure_settings::table)
                            .values(row)
                            .execute(conn)
                            .map_err(db_error)?;
                    }
                }
                Ok(())
            })
        })
        .await
    }
}
