-- Label Studio's own database on the compose PostgreSQL (docker/compose.yml: label-studio,
-- POSTGRE_NAME).  The postgres image runs this once, as POSTGRES_USER, on an empty volume.
CREATE DATABASE label_studio;
