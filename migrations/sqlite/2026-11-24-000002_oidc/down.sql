DROP INDEX refresh_tokens_doctor_client_idx;
DROP INDEX refresh_tokens_family_id_idx;
DROP TABLE refresh_tokens;
DROP TABLE consents;
DROP TABLE signing_keys;
DROP TABLE oidc_clients;
