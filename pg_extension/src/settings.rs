//! BareCount's settings (GUCs). Only superusers may change them (SUSET), so a session cannot
//! lift the caps that keep a bad feed from filling the disk with error text.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// Most errors kept per quarantined row; the rest are summarized in one `_truncated` error.
pub static MAX_ERRORS_PER_ROW: GucSetting<i32> = GucSetting::<i32>::new(20);
/// Most bytes of error text kept per batch; later rows keep only a `_truncated` error.
pub static MAX_ERROR_BYTES_PER_BATCH: GucSetting<i32> = GucSetting::<i32>::new(1 << 20);

/// The directory file connectors may read from (unset: file loads are refused).
pub static LOAD_DIRECTORY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// The operator's keyring file for secrets at rest (unset: secrets cannot be stored).
pub static SECRETS_KEYRING: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

pub fn init() {
    GucRegistry::define_string_guc(
        c"barecount.secrets_keyring",
        c"The file of key-encryption keys that wrap each tenant's secrets key.",
        c"One <id>:<base64 of 32 bytes> per line, the current key first; older keys stay until barecount.secrets_rewrap() has run.",
        &SECRETS_KEYRING,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"barecount.load_directory",
        c"The only directory BareCount's file connectors read from.",
        c"Pipelines and ingest_file read CSV and JSON Lines files by names relative to it; unset, file loads are refused.",
        &LOAD_DIRECTORY,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"barecount.max_errors_per_row",
        c"Most validation errors kept per quarantined row.",
        c"Further errors of the row are summarized by one error with keyword _truncated.",
        &MAX_ERRORS_PER_ROW,
        1,
        10_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"barecount.max_error_bytes_per_batch",
        c"Most bytes of validation error text kept per ingested batch.",
        c"Once reached, later quarantined rows of the batch keep one error with keyword _truncated.",
        &MAX_ERROR_BYTES_PER_BATCH,
        1024,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
}
