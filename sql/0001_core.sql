-- placeholder: replaced by the guard work
CREATE SCHEMA IF NOT EXISTS backstop;
