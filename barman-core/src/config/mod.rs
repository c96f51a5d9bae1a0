//! Barman configuration (INI). Being written.
