//! Every Cargo feature is documented in the crate docs' "Features" section
//! (src/lib.rs), and the section names no feature that does not exist: a
//! feature added to Cargo.toml without a word for users fails here.

use std::collections::BTreeSet;
use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The feature names of Cargo.toml's `[features]` table, `default` aside.
fn cargo_features(manifest: &str) -> BTreeSet<String> {
    let mut in_features = false;
    let mut names = BTreeSet::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_features = line == "[features]";
            continue;
        }
        if !in_features || line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((name, _)) = line.split_once('=') {
            let name = name.trim().trim_matches('"');
            if name != "default" {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// The features the crate docs' "Features" section lists, as its bullets
/// start: "//! - **`name`**".
fn documented_features(lib: &str) -> BTreeSet<String> {
    let section: Vec<&str> = lib
        .lines()
        .skip_while(|l| l.trim() != "//! # Features")
        .skip(1)
        .take_while(|l| l.starts_with("//!") && !l.starts_with("//! #"))
        .collect();
    assert!(
        !section.is_empty(),
        "src/lib.rs has no \"# Features\" section"
    );
    section
        .iter()
        .filter_map(|l| l.strip_prefix("//! - **`"))
        .filter_map(|l| l.split_once("`**"))
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[test]
fn every_cargo_feature_is_in_the_crate_docs_and_no_other() {
    let features = cargo_features(&read("Cargo.toml"));
    assert!(
        features.contains("redis"),
        "the [features] table was not read: {features:?}"
    );
    let documented = documented_features(&read("src/lib.rs"));
    let undocumented: Vec<_> = features.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&features).collect();
    assert!(
        undocumented.is_empty(),
        "features missing from the \"# Features\" section of src/lib.rs: {undocumented:?}"
    );
    assert!(
        stale.is_empty(),
        "src/lib.rs documents features Cargo.toml does not have: {stale:?}"
    );
}

#[test]
fn the_parsers_see_a_missing_feature() {
    let manifest = "[package]\nname = \"x\"\n\n[features]\ndefault = []\n## doc\nfoo = []\n\"bar\" = [\"dep:bar\"]\n\n[dependencies]\nbaz = \"1\"\n";
    let features = cargo_features(manifest);
    assert_eq!(
        features,
        BTreeSet::from(["bar".to_owned(), "foo".to_owned()])
    );
    let lib = "//! text\n//!\n//! # Features\n//!\n//! - **`foo`**: it.\n//! # Next\n//! - **`bar`**: not in the section.\n";
    let documented = documented_features(lib);
    assert_eq!(documented, BTreeSet::from(["foo".to_owned()]));
    assert_eq!(
        features.difference(&documented).collect::<Vec<_>>(),
        ["bar"]
    );
}
