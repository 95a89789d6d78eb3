//! [`ClientStore`] over the `oidc_clients` table: each registration is kept whole, as
//! JSON, under its client ID.

use async_trait::async_trait;
use diesel::prelude::*;
use idp_core::oidc::client::ClientRegistration;
use idp_core::store::{ClientStore, StoreError};
use time::OffsetDateTime;

use super::doctors::db_error;
use super::refresh::Tokens;
use super::schema::{consents, oidc_clients};
use super::{Database, write_transaction};

/// A row of `oidc_clients`, in column order.
#[derive(Queryable, Insertable, Debug)]
#[diesel(table_name = oidc_clients)]
struct ClientRow {
    client_id: String,
    registration: String,
    created_at: i64,
    updated_at: i64,
}

impl ClientRow {
    /// The registration, or [`StoreError::Corrupt`] if the JSON does not parse or names
    /// another client.
    fn into_registration(self) -> Result<ClientRegistration, StoreError> {
        let client: ClientRegistration = serde_json::from_str(&self.registration).map_err(|e| {
            StoreError::Corrupt(format!(
                "client {}: column registration is not a registration: {e}",
                self.client_id
            ))
        })?;
        if client.client_id != self.client_id {
            return Err(StoreError::Corrupt(format!(
                "client {}: column registration names client {}",
                self.client_id, client.client_id
            )));
        }
        Ok(client)
    }
}

#[async_trait]
impl ClientStore for Database {
    async fn client(&self, client_id: &str) -> Result<Option<ClientRegistration>, StoreError> {
        let client_id = client_id.to_owned();
        self.run(move |conn| {
            oidc_clients::table
                .find(client_id)
                .first::<ClientRow>(conn)
                .optional()
                .map_err(db_error)?
                .map(ClientRow::into_registration)
                .transpose()
        })
        .await
    }

    async fn clients(&self) -> Result<Vec<ClientRegistration>, StoreError> {
        self.run(|conn| {
            oidc_clients::table
                .order(oidc_clients::client_id.asc())
                .load::<ClientRow>(conn)
                .map_err(db_error)?
                .into_iter()
                .map(ClientRow::into_registration)
                .collect()
        })
        .await
    }

    async fn put_client(
        &self,
        client: &ClientRegistration,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let registration = serde_json::to_string(client).map_err(|e| {
            StoreError::Conflict(format!("the registration cannot be serialised: {e}"))
        })?;
        let row = ClientRow {
            client_id: client.client_id.clone(),
            registration,
            created_at: now.unix_timestamp(),
            updated_at: now.unix_timestamp(),
        };
        self.run(move |conn| {
            // No upsert clause through MultiBackend: update, else insert. Two concurrent
            // first registrations of one ID on PostgreSQL end in one Conflict (the key).
            write_transaction(conn, |conn| {
                let updated = diesel::update(oidc_clients::table.find(&row.client_id))
                    .set((
                        oidc_clients::registration.eq(&row.registration),
                        oidc_clients::updated_at.eq(row.updated_at),
                    ))
                    .execute(conn)
                    .map_err(db_error)?;
                if updated == 0 {
                    diesel::insert_into(oidc_clients::table)
                        .values(&row)
                        .execute(conn)
                        .map_err(db_error)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn remove_client(&self, client_id: &str) -> Result<bool, StoreError> {
        let client_id = client_id.to_owned();
        self.run(move |conn| {
            write_transaction(conn, |conn| {
                diesel::delete(consents::table.filter(consents::client_id.eq(&client_id)))
                    .execute(conn)
                    .map_err(db_error)?;
                Tokens::Client(&client_id).delete(conn)?;
                let removed = diesel::delete(oidc_clients::table.find(&client_id))
                    .execute(conn)
                    .map_err(db_error)?;
                Ok(removed > 0)
            })
        })
        .await
    }
}
