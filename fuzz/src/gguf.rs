//! The GGUF reader on arbitrary files: a file that parses has every tensor inside it, each
//! widening to as many values as its dimensions say; anything else is an error, never a panic
//! or an allocation a header merely claims.

use std::path::Path;

use ferrogpt_gguf::GgufFile;

pub fn run(data: &[u8], _scratch: &Path) {
    let Ok(file) = GgufFile::parse(data.to_vec()) else { return };
    for info in &file.tensors {
        let values = file
            .tensor_f32(&info.name)
            .unwrap_or_else(|e| panic!("tensor {} parsed but does not read: {e}", info.name));
        assert_eq!(values.len() as u64, info.elements(), "tensor {}: {:?}", info.name, info.dims);
    }
    for (key, _) in &file.metadata {
        assert!(file.get(key).is_some(), "metadata `{key}` listed but not found");
    }
}
