//! Offboarding a tenant with `barecount-flight offboard`: refused while it is active, has pins
//! or is the default tenant; otherwise a complete export (Parquet, rows, ledger slice, digest,
//! manifest of hashes), then zero rows for it in every table while the other tenants' data and
//! the whole chain still verify.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use barecount_tests::*;
use base64::Engine;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

async fn offboard(url: &str, tenant: &str, out: &std::path::Path) -> (bool, String) {
    let o = tokio::process::Command::new(flight_bin())
        .args([
            "offboard",
            "--database-url",
            &gateway_url(url),
            "--tenant",
            tenant,
            "--out",
            &out.to_string_lossy(),
        ])
        .output()
        .await
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Rows of `tenant` in every table of the database that has a tenant_id column.
async fn rows_everywhere(c: &Client, tenant: &str) -> Vec<String> {
    let tables = strings(
        c,
        "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
          WHERE c.relkind IN ('r', 'p') AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
          ORDER BY 1",
    )
    .await;
    assert!(tables.len() > 40, "{tables:?}");
    let mut left = vec![];
    for t in tables {
        let n = c
            .query_one(
                &format!("SELECT count(*) FROM {t} WHERE tenant_id = $1"),
                &[&tenant],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if n > 0 {
            left.push(format!("{t}: {n}"));
        }
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offboarded_tenant_leaves_a_complete_export_and_no_row_behind() {
    let db = fresh_db().await;
    let admin = &db.client;
    let su = &db.superuser;
    admin
        .batch_execute(
            "SELECT barecount.tenant_create('acme', 'Acme'); SELECT barecount.tenant_create('beta', 'Beta')",
        )
        .await
        .unwrap();
    let mut acme_publisher = String::new();
    for t in ["acme", "beta"] {
        let p = login_role(
            admin,
            &format!("off_{t}"),
            &["barecount_engineer", "barecount_publisher"],
            Some(t),
        )
        .await;
        let c = connect_as(&db.url, &p).await;
        if t == "acme" {
            acme_publisher = p.clone();
        }
        c.execute(
            "SELECT barecount.contract_register($1)",
            &[&ORDERS_CONTRACT],
        )
        .await
        .unwrap();
        let rows =
            serde_json::json!([order("A1", "east", 10.0), order("A2", "west", 5.0), {"bad": true}]);
        c.execute("SELECT barecount.ingest('orders', $1)", &[&rows])
            .await
            .unwrap();
        c.batch_execute(
            "SELECT barecount.publish('sales', 'SELECT count(*)::bigint AS n FROM raw.orders');
             SELECT barecount.publish('sales', 'SELECT g::bigint AS n FROM generate_series(1, 1000) g');
             SELECT barecount.dataset_pin('sales', 1, 'board')",
        )
        .await
        .unwrap();
    }
    api_token(admin, "acme", &["read"]).await;
    admin
        .batch_execute(
            "SELECT barecount.flag_define('ui.x', 'boolean', 'false', 'x'); SELECT barecount.flag_set('ui.x', 'acme', 'true')",
        )
        .await
        .unwrap();
    let out = temp_dir("bc-offboard");

    // refused, with nothing written: active, the default tenant, pinned versions (listed)
    let (ok, text) = offboard(&db.url, "acme", &out).await;
    assert!(!ok && text.contains("must be suspended"), "{text}");
    let (ok, text) = offboard(&db.url, "default", &out).await;
    assert!(!ok && text.contains("cannot be offboarded"), "{text}");
    admin
        .batch_execute("SELECT barecount.tenant_suspend('acme', 'contract ended')")
        .await
        .unwrap();
    let (ok, text) = offboard(&db.url, "acme", &out).await;
    assert!(
        !ok && text.contains("has pinned versions: sales@1 (board)"),
        "{text}"
    );
    assert_eq!(std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0), 0);
    assert_eq!(
        outcome(admin, "SELECT barecount.tenant_offboard('acme', '{\"tenant\": \"acme\", \"files\": [\"x\"]}')").await,
        "55000",
        "the pin refuses the database call too"
    );
    // the way out: resume, let the holder unpin, suspend again
    admin
        .batch_execute("SELECT barecount.tenant_resume('acme')")
        .await
        .unwrap();
    let publisher = connect_as(&db.url, &acme_publisher).await;
    publisher
        .batch_execute("SELECT barecount.dataset_unpin('sales', 1, 'board')")
        .await
        .unwrap();
    admin
        .batch_execute("SELECT barecount.tenant_suspend('acme', 'contract ended')")
        .await
        .unwrap();
    let acme_entries = count(
        su,
        "SELECT count(*) FROM barecount.ledger WHERE tenant_id = 'acme'",
    )
    .await;
    // a hand-made manifest is not this tenant's export
    assert_eq!(
        outcome(admin, "SELECT barecount.tenant_offboard('acme', '{\"tenant\": \"acme\", \"files\": [\"x\"], \"ledger\": {\"entries\": 1, \"slice_sha256\": \"00\"}}')").await,
        "22023"
    );
    // and only admins offboard
    let eng = login_role(admin, "off_eng", &["barecount_engineer"], Some("beta")).await;
    let e = connect_as(&db.url, &eng).await;
    assert_eq!(
        outcome(&e, "SELECT * FROM barecount.tenant_offboard_check('acme')").await,
        "42501"
    );

    let (ok, text) = offboard(&db.url, "acme", &out).await;
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "its login roles stay, mapped to no tenant (roles are yours: DROP ROLE them when nothing else uses them): {acme_publisher}"
        )),
        "{text}"
    );
    let dir = std::fs::read_dir(&out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();

    // the export: every file in the manifest, with its hash; Parquet of both versions; the
    // ledger slice, each entry's bytes hashing to its hash
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["tenant"], "acme");
    let files = manifest["files"].as_array().unwrap();
    for f in files {
        let bytes = std::fs::read(dir.join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(
            format!("{:x}", Sha256::digest(&bytes)),
            f["sha256"].as_str().unwrap(),
            "{f}"
        );
    }
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    for want in [
        "published/sales__v1.parquet",
        "published/sales__v2.parquet",
        "rows/barecount.tenants.jsonl",
        "rows/barecount.contracts.jsonl",
        "rows/barecount.quarantine.jsonl",
        "rows/barecount.flag_overrides.jsonl",
        "rows/raw.orders.jsonl",
        "ledger.jsonl",
        "ledger-digest.json",
    ] {
        assert!(paths.contains(&want), "{want} not in {paths:?}");
    }
    let v2 = files
        .iter()
        .find(|f| f["path"] == "published/sales__v2.parquet")
        .unwrap();
    assert_eq!(v2["rows"], 1000);
    let reader = parquet::file::reader::SerializedFileReader::new(
        std::fs::File::open(dir.join("published/sales__v2.parquet")).unwrap(),
    )
    .unwrap();
    use parquet::file::reader::FileReader;
    assert_eq!(reader.metadata().file_metadata().num_rows(), 1000);
    let ledger = std::fs::read_to_string(dir.join("ledger.jsonl")).unwrap();
    let entries: Vec<serde_json::Value> = ledger
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len() as i64, acme_entries);
    assert_eq!(manifest["ledger"]["entries"], acme_entries);
    for e in &entries {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(e["canonical_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            format!("{:x}", Sha256::digest(&bytes)),
            e["entry_hash"].as_str().unwrap()
        );
    }
    assert!(
        !std::fs::read_to_string(dir.join("rows/barecount.tokens.jsonl"))
            .unwrap_or_default()
            .contains("secret_hash")
    );

    // nothing of acme is left anywhere; its schemas are gone
    assert_eq!(rows_everywhere(su, "acme").await, Vec::<String>::new());
    assert_eq!(
        count(
            su,
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE '%\\_acme'"
        )
        .await,
        0
    );
    // the other tenant is untouched, the whole chain verifies (acme's entries redacted), and
    // the final receipt is on the installation's chain
    assert!(!rows_everywhere(su, "beta").await.is_empty());
    assert!(chain_verifies(admin).await);
    assert_eq!(
        count(su, "SELECT count(*) FROM barecount.ledger_redactions").await,
        acme_entries
    );
    let receipt = admin
        .query_one(
            "SELECT tenant_id, inputs FROM barecount.ledger WHERE event_type = 'tenant_offboard'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(receipt.get::<_, String>(0), "default");
    let inputs: serde_json::Value = receipt.get(1);
    assert_eq!(inputs["ledger"]["entries"], acme_entries);
    assert_eq!(inputs["roles"], serde_json::json!([acme_publisher]));
    assert_eq!(
        inputs["deleted"]["raw.orders"], 3,
        "two accepted rows and the quarantined one"
    );
    // the redactions cannot be changed either
    assert_eq!(
        outcome(su, "DELETE FROM barecount.ledger_redactions").await,
        "2F002"
    );
    let _ = std::fs::remove_dir_all(&out);
}
