//! The engine's safetensors reader on arbitrary files: every tensor read holds as many values
//! as its shape says, loading against a model layout yields exactly the layout's parameters,
//! and anything else is an error naming the file.

use std::path::Path;

use ferrogpt_engine::io::{load_model, load_tensors};
use ferrogpt_engine::params::ParamLayout;

use crate::fixtures::tiny_config;
use crate::write_scratch;

pub fn run(data: &[u8], scratch: &Path) {
    let path = scratch.join("weights.safetensors");
    write_scratch(&path, data);
    match load_tensors(&path) {
        Ok(tensors) => {
            for (name, (shape, values)) in &tensors {
                let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
                assert_eq!(count, Some(values.len()), "tensor {name}: shape {shape:?}");
            }
        }
        Err(e) => assert!(e.to_string().contains("weights.safetensors"), "the error names the file: {e}"),
    }
    let layout = ParamLayout::new(&tiny_config());
    if let Ok(params) = load_model(&path, &layout) {
        assert_eq!(params.len(), layout.total);
    }
}
