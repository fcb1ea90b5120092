//! Tollgate's storage traits on PostgreSQL.

mod rows;
