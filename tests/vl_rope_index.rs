//! M-RoPE position ids against transformers' `get_rope_index` (Qwen2-VL,
//! Qwen2.5-VL, Qwen3-VL) on batches with left and right padding, text-only
//! rows, two images in a row, and images at the ends of the prompt.
//! Goldens: tests/fixtures/vl/rope_index.json by scripts/make_vl_rope_goldens.py.

use anyhow::Result;
use rlsd::model::vision::rope_index;
use serde_json::Value;
use std::path::Path;

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

#[test]
fn positions_and_deltas_equal_transformers() -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vl/rope_index.json");
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    let mut images_seen = 0;
    for (n, case) in cases.iter().enumerate() {
        let merge = case["merge"].as_u64().unwrap() as usize;
        let pad = case["image_pad_id"].as_i64().unwrap();
        let grids: Vec<[usize; 3]> = case["grids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let g = ints(g);
                [g[0] as usize, g[1] as usize, g[2] as usize]
            })
            .collect();
        let mut grids_left = grids.as_slice();
        let rows = case["input_ids"].as_array().unwrap();
        for (b, row) in rows.iter().enumerate() {
            let ids = ints(row);
            let keep: Vec<bool> = ints(&case["attention_mask"][b])
                .iter()
                .map(|&m| m == 1)
                .collect();
            // This row's images: one grid per run of pad tokens.
            let runs = ids
                .iter()
                .zip(&keep)
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|w| *w[1].0 == pad && *w[0].0 != pad)
                .count()
                + usize::from(ids.first() == Some(&pad));
            let (mine, rest) = grids_left.split_at(runs);
            grids_left = rest;
            images_seen += mine.len();
            let got = rope_index(&ids, Some(&keep), pad, mine, merge)?;
            for axis in 0..3 {
                let want = ints(&case["position_ids"][axis][b]);
                assert_eq!(got.positions[axis], want, "case {n} row {b} axis {axis}");
            }
            assert_eq!(
                got.delta,
                case["deltas"][b].as_i64().unwrap(),
                "case {n} row {b} delta"
            );
        }
        assert!(grids_left.is_empty(), "case {n}: unused grids");
    }
    assert_eq!(images_seen, 6 * 3 + 2);
    Ok(())
}
