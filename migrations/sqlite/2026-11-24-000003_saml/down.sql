DROP TABLE saml_sps;
