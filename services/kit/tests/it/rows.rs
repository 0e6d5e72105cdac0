//! Multi-row statements (`db::execute_rows`): chunked under the bind-parameter limits and the
//! statement size, on both backends; inserts and the portable update-from-values form.

use minqing_kit::{
    backend_tests,
    db::{self, Backend, Migrations},
    testing::TestDatabase,
};
use sqlx::Row;

const TABLE: Migrations = Migrations {
    sqlite: &[(
        100,
        "scratch",
        "CREATE TABLE things (id TEXT PRIMARY KEY, n BIGINT NOT NULL, body TEXT NOT NULL, note TEXT)",
    )],
    postgres: &[(
        100,
        "scratch",
        "CREATE TABLE things (id TEXT PRIMARY KEY, n BIGINT NOT NULL, body TEXT NOT NULL, note TEXT)",
    )],
};

async fn many_rows_insert_and_update_in_chunks(backend: Backend) {
    let Some(t) = TestDatabase::new(backend).await else {
        return;
    };
    let db = t.db("kit", &TABLE).await;
    // 12,000 rows of 4 values: more than one statement's parameters on either backend, and
    // some rows large enough to cut statements by size.
    let rows: Vec<(String, i64, String)> = (0..12_000)
        .map(|i| {
            let body = if i % 1_000 == 0 {
                "x".repeat(db::MAX_STATEMENT_BYTES / 2 + 1)
            } else {
                format!("body {i}")
            };
            (format!("t{i:05}"), i, body)
        })
        .collect();
    let mut tx = db.begin().await.unwrap();
    let inserted = db::execute_rows(
        tx.conn(),
        4,
        rows.clone(),
        |(id, _, body)| id.len() + 8 + body.len(),
        |values| format!("INSERT INTO things (id, n, body, note) VALUES {values}"),
        |q, (id, n, body)| q.bind(id).bind(n).bind(body).bind(None::<String>),
    )
    .await
    .unwrap();
    assert_eq!(inserted, 12_000);
    let nothing = db::execute_rows(
        tx.conn(),
        4,
        Vec::<(String, i64, String)>::new(),
        |_| 0,
        |values| format!("INSERT INTO things (id, n, body, note) VALUES {values}"),
        |q, (id, n, body)| q.bind(id).bind(n).bind(body).bind(None::<String>),
    )
    .await
    .unwrap();
    assert_eq!(nothing, 0);
    // Every even row changed where it still has its `n`; one row's `n` is wrong, so it is not.
    let changes: Vec<(String, i64, Option<String>, i64)> = (0..12_000)
        .step_by(2)
        .map(|i| {
            let expected = if i == 4 { -1 } else { i };
            (
                format!("t{i:05}"),
                i * 10,
                Some(format!("note {i}")),
                expected,
            )
        })
        .collect();
    let updated = db::execute_rows(
        tx.conn(),
        4,
        changes,
        |_| 64,
        |values| {
            format!(
                "WITH v (id, n, note, expected) AS (VALUES {values}) \
                 UPDATE things SET n = v.n, note = v.note FROM v \
                 WHERE things.id = v.id AND things.n = v.expected"
            )
        },
        |q, (id, n, note, expected)| q.bind(id).bind(n).bind(note).bind(expected),
    )
    .await
    .unwrap();
    assert_eq!(updated, 5_999);
    tx.commit().await.unwrap();

    let read = sqlx::query("SELECT id, n, body, note FROM things ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(read.len(), 12_000);
    for (i, row) in read.iter().enumerate() {
        let i = i as i64;
        let (n, note): (i64, Option<String>) = (row.get(1), row.get(3));
        if i % 2 == 0 && i != 4 {
            assert_eq!((n, note), (i * 10, Some(format!("note {i}"))));
        } else {
            assert_eq!((n, note), (i, None));
        }
        assert_eq!(row.get::<String, _>(2), rows[i as usize].2);
    }
    db.close().await;
}

/// Statements hold any number of rows up to 8, else a power of two, within the row limit and
/// the byte cap: few distinct texts, each prepared once per connection.
#[test]
fn statements_are_cut_to_a_few_sizes() {
    let sizes: Vec<usize> = (0..=20).map(db::statement_size).collect();
    assert_eq!(
        sizes,
        [
            0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 8, 8, 8, 8, 16, 16, 16, 16, 16
        ]
    );
    assert_eq!(db::statement_size(1_000), 512);
    assert_eq!(db::statement_size(1_024), 1_024);

    let small = vec![10; 300];
    assert_eq!(db::statement_rows(&small, 1_000), 256);
    assert_eq!(db::statement_rows(&small[256..], 1_000), 32);
    assert_eq!(db::statement_rows(&small, 100), 64, "the row limit first");
    assert_eq!(db::statement_rows(&small[..7], 1_000), 7);
    assert_eq!(db::statement_rows(&[], 1_000), 0);
    // Cut by bytes first: 20 rows fit before the large one, 16 are taken.
    let mut sized = vec![100; 20];
    sized.push(db::MAX_STATEMENT_BYTES);
    assert_eq!(db::statement_rows(&sized, 1_000), 16);
    // A row larger than the cap goes alone.
    assert_eq!(db::statement_rows(&sized[20..], 1_000), 1);

    // Lists cut by count alone, every item once and in order.
    let items: Vec<u32> = (0..300).collect();
    let chunks: Vec<&[u32]> = db::statement_chunks(&items, 200).collect();
    let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
    assert_eq!(lens, [128, 128, 32, 8, 4]);
    assert_eq!(chunks.concat(), items);
    assert_eq!(db::statement_chunks::<u32>(&[], 200).count(), 0);
    // Cut by size: 20 items of which the sixth alone fills a statement.
    let items: Vec<u32> = (0..20).collect();
    let mut sizes = vec![10; 20];
    sizes[5] = db::MAX_STATEMENT_BYTES;
    let chunks = db::sized_chunks(&items, &sizes, 16);
    let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
    assert_eq!(lens, [5, 1, 8, 6]);
    assert_eq!(chunks.concat(), items);
    assert!(db::sized_chunks::<u32>(&[], &[], 16).is_empty());
}

#[test]
fn values_lists_number_placeholders_row_by_row() {
    assert_eq!(db::values_list(2, 3), "($1, $2, $3), ($4, $5, $6)");
    assert_eq!(db::values_list(1, 1), "($1)");
    assert_eq!(db::values_list(0, 4), "");
    assert_eq!(db::values_list_after(6, 2, 2), "($7, $8), ($9, $10)");
    assert_eq!(
        db::values_list_for(db::Backend::Postgres, 2, 2),
        "($1, $2), ($3, $4)"
    );
    assert_eq!(
        db::values_list_for(db::Backend::Sqlite, 2, 3),
        "(?, ?, ?), (?, ?, ?)"
    );
    assert_eq!(db::values_list_for(db::Backend::Sqlite, 0, 3), "");
}

#[test]
fn in_lists_number_their_placeholders() {
    assert_eq!(db::placeholders(3), "$1, $2, $3");
    assert_eq!(db::placeholders(1), "$1");
    assert_eq!(db::placeholders(0), "");
    assert_eq!(db::column_placeholders(3, 10, 0), "$1, $11, $21");
    assert_eq!(db::column_placeholders(2, 3, 2), "$3, $6");
    assert_eq!(db::column_placeholders(0, 3, 0), "");
}

backend_tests!(many_rows_insert_and_update_in_chunks);
