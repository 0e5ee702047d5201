//! The README's first code block is `examples/quickstart.rs`, byte for byte.

#[test]
fn the_readme_opens_with_the_quickstart() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let example = std::fs::read_to_string(format!("{root}/examples/quickstart.rs")).unwrap();
    let start = readme.find("```").expect("the README has a code block");
    let block = &readme[start..];
    let (fence, body) = block.split_once('\n').unwrap();
    assert_eq!(fence, "```rust", "the first code block is Rust");
    let end = body.find("\n```").expect("the block is closed");
    assert_eq!(
        &body[..=end],
        example,
        "README.md's first code block and examples/quickstart.rs differ: copy the file into the README"
    );
    assert!(
        example.lines().count() < 60,
        "the quickstart stays under 60 lines"
    );
}
