DROP INDEX doctors_hpki_holder_id_key;
DROP TABLE doctors;
