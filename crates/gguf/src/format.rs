//! The GGUF container (ggml's `docs/gguf.md`, version 3), little-endian throughout:
//!
//! ```text
//! "GGUF" | version u32 | tensor count u64 | metadata count u64
//! metadata: key (u64 length + UTF-8) | value type u32 | value
//! tensor records: name | dimension count u32 | dimensions u64 each, fastest-varying first
//!                 | tensor type u32 | offset u64 from the start of the data section
//! padding to ALIGNMENT | tensor data, each tensor at an ALIGNMENT multiple
//! ```

use std::path::Path;

use ferrogpt_engine::quant::{dequantize_q8_0, BlockQ8_0, F16, Q8_0_BLOCK};

use crate::GgufError;

pub const MAGIC: [u8; 4] = *b"GGUF";
pub const VERSION: u32 = 3;
/// Alignment of the data section and of every tensor in it (`general.alignment`'s default).
pub const ALIGNMENT: u64 = 32;

/// A metadata value. An array holds values of one type.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// An unsigned integer of any width, as u64.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::U8(v) => out.push(*v),
            Value::I8(v) => out.extend(v.to_le_bytes()),
            Value::U16(v) => out.extend(v.to_le_bytes()),
            Value::I16(v) => out.extend(v.to_le_bytes()),
            Value::U32(v) => out.extend(v.to_le_bytes()),
            Value::I32(v) => out.extend(v.to_le_bytes()),
            Value::F32(v) => out.extend(v.to_le_bytes()),
            Value::Bool(v) => out.push(u8::from(*v)),
            Value::String(s) => write_string(out, s),
            Value::Array(items) => {
                // An empty array's element type is irrelevant; u8 is what ggml writes.
                out.extend(items.first().map_or(0, Value::type_id).to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    item.write(out);
                }
            }
            Value::U64(v) => out.extend(v.to_le_bytes()),
            Value::I64(v) => out.extend(v.to_le_bytes()),
            Value::F64(v) => out.extend(v.to_le_bytes()),
        }
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// The tensor types this crate reads and writes (ggml's `GGML_TYPE_*` numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    Q8_0,
}

impl TensorType {
    fn id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q8_0 => 8,
        }
    }

    fn from_id(id: u32) -> Option<TensorType> {
        match id {
            0 => Some(TensorType::F32),
            1 => Some(TensorType::F16),
            8 => Some(TensorType::Q8_0),
            _ => None,
        }
    }

    /// Bytes of `elements` values, `None` when q8_0 blocks cannot hold them exactly.
    pub fn bytes(self, elements: u64) -> Option<u64> {
        match self {
            TensorType::F32 => elements.checked_mul(4),
            TensorType::F16 => elements.checked_mul(2),
            TensorType::Q8_0 => elements
                .is_multiple_of(Q8_0_BLOCK as u64)
                .then(|| (elements / Q8_0_BLOCK as u64).checked_mul(std::mem::size_of::<BlockQ8_0>() as u64))
                .flatten(),
        }
    }
}

/// A tensor's record: `dims` fastest-varying first (a row-major `[rows, cols]` matrix is
/// `[cols, rows]`), `offset` from the start of the data section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: TensorType,
    pub offset: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A GGUF file read into memory.
#[derive(Debug)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    bytes: Vec<u8>,
    data_start: usize,
}

/// Reads little-endian values off a byte slice, failing on a short read instead of panicking.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.at.checked_add(n))
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| format_err(format!("the file ends inside {what} (offset {})", self.at)))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format_err(format!("{what} is not UTF-8")))
    }

    /// A count of items each at least `min_bytes` long: more than the rest of the file holds
    /// is an error before anything is allocated for them.
    fn count(&mut self, min_bytes: u64, what: &str) -> Result<usize, GgufError> {
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.at) as u64;
        if n.saturating_mul(min_bytes.max(1)) > left {
            return Err(format_err(format!("{what} is {n}, more than the file holds")));
        }
        Ok(n as usize)
    }

    fn value(&mut self, type_id: u32, key: &str, depth: usize) -> Result<Value, GgufError> {
        let what = format!("the value of `{key}`");
        Ok(match type_id {
            0 => Value::U8(self.array::<1>(&what)?[0]),
            1 => Value::I8(i8::from_le_bytes(self.array(&what)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => Value::U32(self.u32(&what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => Value::Bool(self.array::<1>(&what)?[0] != 0),
            8 => Value::String(self.string(&what)?),
            9 if depth == 0 => {
                let item_type = self.u32(&what)?;
                let n = self.count(1, &what)?;
                let items = (0..n).map(|_| self.value(item_type, key, depth + 1)).collect::<Result<_, _>>()?;
                Value::Array(items)
            }
            10 => Value::U64(self.u64(&what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            9 => return Err(format_err(format!("`{key}` nests arrays, which this reader does not take"))),
            other => return Err(format_err(format!("`{key}` has unknown value type {other}"))),
        })
    }
}

fn format_err(why: String) -> GgufError {
    GgufError::Format { why }
}

fn align(n: u64) -> u64 {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

impl GgufFile {
    pub fn read(path: &Path) -> Result<GgufFile, GgufError> {
        let bytes = std::fs::read(path).map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        GgufFile::parse(bytes)
    }

    /// Parses a whole file; every tensor must lie inside it.
    pub fn parse(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        let mut c = Cursor { bytes: &bytes, at: 0 };
        if c.array::<4>("the magic")? != MAGIC {
            return Err(format_err("the file does not start with \"GGUF\"".into()));
        }
        let version = c.u32("the version")?;
        if version != VERSION {
            return Err(GgufError::Version(version));
        }
        // A tensor record is at least 8 + 4 + 8 + 4 + 8 bytes, a metadata pair 8 + 4 + 1.
        let tensor_count = c.count(32, "the tensor count")?;
        let metadata_count = c.count(13, "the metadata count")?;
        let mut metadata = Vec::with_capacity(metadata_count);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..metadata_count {
            let key = c.string("a metadata key")?;
            if !seen.insert(key.clone()) {
                return Err(format_err(format!("metadata key `{key}` appears twice")));
            }
            let type_id = c.u32("a metadata type")?;
            let value = c.value(type_id, &key, 0)?;
            metadata.push((key, value));
        }
        let mut tensors = Vec::with_capacity(tensor_count);
        for _ in 0..tensor_count {
            let name = c.string("a tensor name")?;
            // Tensors are looked up by name: a second one of the same name could never be read.
            if tensors.iter().any(|t: &TensorInfo| t.name == name) {
                return Err(tensor_err(&name, "appears twice".into()));
            }
            let n_dims = c.u32("a tensor's dimension count")?;
            if n_dims == 0 || n_dims > 4 {
                return Err(tensor_err(&name, format!("{n_dims} dimensions (ggml has 1 to 4)")));
            }
            let dims = (0..n_dims).map(|_| c.u64("a tensor dimension")).collect::<Result<Vec<_>, _>>()?;
            let type_id = c.u32("a tensor type")?;
            let ty = TensorType::from_id(type_id)
                .ok_or_else(|| tensor_err(&name, format!("type {type_id} is not supported (f32, f16 and q8_0 are)")))?;
            let offset = c.u64("a tensor offset")?;
            tensors.push(TensorInfo { name, dims, ty, offset });
        }
        let data_start = align(c.at as u64);
        if !tensors.is_empty() && data_start > bytes.len() as u64 {
            return Err(format_err(format!(
                "the file ends at {} bytes, before its data section at {data_start}",
                bytes.len()
            )));
        }
        let data_len = (bytes.len() as u64).saturating_sub(data_start);
        for t in &tensors {
            let elements = t.dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
            let size = elements
                .and_then(|e| t.ty.bytes(e))
                .ok_or_else(|| tensor_err(&t.name, format!("{:?} values of {:?} do not fit in whole blocks", t.dims, t.ty)))?;
            if !t.offset.is_multiple_of(ALIGNMENT) || t.offset.checked_add(size).is_none_or(|end| end > data_len) {
                return Err(tensor_err(
                    &t.name,
                    format!("{size} bytes at offset {} do not lie inside the data section", t.offset),
                ));
            }
        }
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            data_start: data_start as usize,
            bytes,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's raw bytes (checked to lie inside the file when it was parsed).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = self.data_start + info.offset as usize;
        let len = info.ty.bytes(info.elements()).unwrap_or(0) as usize;
        &self.bytes[start..start + len]
    }

    /// A tensor's values widened to f32, in its own order (fastest dimension first).
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let info = self.tensor(name).ok_or_else(|| tensor_err(name, "is not in the file".into()))?;
        let bytes = self.tensor_bytes(info);
        Ok(match info.ty {
            TensorType::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            TensorType::F16 => bytes
                .chunks_exact(2)
                .map(|b| F16(u16::from_le_bytes([b[0], b[1]])).to_f32())
                .collect(),
            TensorType::Q8_0 => {
                let blocks: Vec<BlockQ8_0> = bytes
                    .chunks_exact(std::mem::size_of::<BlockQ8_0>())
                    .map(|b| {
                        let mut qs = [0i8; Q8_0_BLOCK];
                        for (q, &byte) in qs.iter_mut().zip(&b[2..]) {
                            *q = byte as i8;
                        }
                        BlockQ8_0 {
                            d: F16(u16::from_le_bytes([b[0], b[1]])),
                            qs,
                        }
                    })
                    .collect();
                dequantize_q8_0(&blocks)
            }
        })
    }
}

fn tensor_err(name: &str, why: String) -> GgufError {
    GgufError::Tensor {
        name: name.to_string(),
        why,
    }
}

/// Collects metadata and tensors, then writes them as one GGUF file.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(TensorInfo, Vec<u8>)>,
    data_len: u64,
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    pub fn metadata(&mut self, key: &str, value: Value) {
        self.metadata.push((key.to_string(), value));
    }

    /// Adds a tensor of `dims` (fastest first) whose encoded bytes are `data`.
    pub fn tensor(&mut self, name: &str, dims: Vec<u64>, ty: TensorType, data: Vec<u8>) -> Result<(), GgufError> {
        let expected = ty.bytes(dims.iter().product());
        if expected != Some(data.len() as u64) {
            return Err(tensor_err(name, format!("{} bytes for {dims:?} values of {ty:?}", data.len())));
        }
        let info = TensorInfo {
            name: name.to_string(),
            dims,
            ty,
            offset: self.data_len,
        };
        self.data_len = align(self.data_len + data.len() as u64);
        self.tensors.push((info, data));
        Ok(())
    }

    /// The whole file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(MAGIC);
        out.extend(VERSION.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_string(&mut out, key);
            out.extend(value.type_id().to_le_bytes());
            value.write(&mut out);
        }
        for (info, _) in &self.tensors {
            write_string(&mut out, &info.name);
            out.extend((info.dims.len() as u32).to_le_bytes());
            for d in &info.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(info.ty.id().to_le_bytes());
            out.extend(info.offset.to_le_bytes());
        }
        let data_start = align(out.len() as u64) as usize;
        for (info, data) in &self.tensors {
            out.resize(data_start + info.offset as usize, 0);
            out.extend(data);
        }
        out.resize(out.len().next_multiple_of(ALIGNMENT as usize), 0);
        out
    }

    /// Writes the file to `path` (through a temporary sibling renamed into place).
    pub fn write(&self, path: &Path) -> Result<(), GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("gguf.partial");
        std::fs::write(&tmp, self.to_bytes()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Encodes f32 values as a tensor of type `ty`.
pub fn encode(values: &[f32], ty: TensorType) -> Result<Vec<u8>, GgufError> {
    Ok(match ty {
        TensorType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        TensorType::F16 => values.iter().flat_map(|&v| F16::from_f32(v).0.to_le_bytes()).collect(),
        TensorType::Q8_0 => ferrogpt_engine::quant::quantize_q8_0(values)?
            .iter()
            .flat_map(|b| b.d.0.to_le_bytes().into_iter().chain(b.qs.iter().map(|&q| q as u8)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GgufWriter {
        let mut w = GgufWriter::new();
        w.metadata("general.architecture", Value::String("llama".into()));
        w.metadata("llama.block_count", Value::U32(2));
        w.metadata("x.f", Value::F32(1.5));
        w.metadata("x.list", Value::Array(vec![Value::String("a".into()), Value::String("b c".into())]));
        w.metadata("x.empty", Value::Array(vec![]));
        let values: Vec<f32> = (0..96).map(|i| (i as f32 - 40.0) / 7.0).collect();
        for (name, ty) in [("a", TensorType::F32), ("b", TensorType::F16), ("c", TensorType::Q8_0)] {
            w.tensor(name, vec![32, 3], ty, encode(&values, ty).unwrap()).unwrap();
        }
        w.tensor("odd", vec![5], TensorType::F32, encode(&values[..5], TensorType::F32).unwrap())
            .unwrap();
        w
    }

    #[test]
    fn what_is_written_reads_back() {
        let file = GgufFile::parse(sample().to_bytes()).unwrap();
        assert_eq!(file.get("general.architecture").and_then(Value::as_str), Some("llama"));
        assert_eq!(file.get("llama.block_count").and_then(Value::as_u64), Some(2));
        assert_eq!(file.get("x.f"), Some(&Value::F32(1.5)));
        assert_eq!(
            file.get("x.list"),
            Some(&Value::Array(vec![Value::String("a".into()), Value::String("b c".into())]))
        );
        assert_eq!(file.get("x.empty"), Some(&Value::Array(vec![])));
        let values: Vec<f32> = (0..96).map(|i| (i as f32 - 40.0) / 7.0).collect();
        assert_eq!(file.tensor_f32("a").unwrap(), values);
        let max_err = |got: Vec<f32>| got.iter().zip(&values).map(|(g, v)| (g - v).abs()).fold(0.0f32, f32::max);
        assert!(max_err(file.tensor_f32("b").unwrap()) < 4e-3);
        // q8_0: a step of max|x|/127 per block, half of it at most.
        assert!(max_err(file.tensor_f32("c").unwrap()) <= 8.0 / 127.0 / 2.0 + 1e-6);
        assert_eq!(file.tensor_f32("odd").unwrap(), values[..5]);
        for t in &file.tensors {
            assert_eq!(t.offset % ALIGNMENT, 0, "{}", t.name);
        }
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let good = sample().to_bytes();
        // Every truncation that cuts into the last tensor fails cleanly (the padding after it
        // is not needed).
        let parsed = GgufFile::parse(good.clone()).unwrap();
        let last = parsed
            .tensors
            .iter()
            .map(|t| t.offset + t.ty.bytes(t.elements()).unwrap())
            .max()
            .unwrap();
        let end_of_data = parsed.data_start + last as usize;
        assert!(GgufFile::parse(good[..end_of_data].to_vec()).is_ok());
        for len in (0..end_of_data).step_by(7) {
            assert!(GgufFile::parse(good[..len].to_vec()).is_err(), "truncated to {len}");
        }
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert!(matches!(GgufFile::parse(bad_magic), Err(GgufError::Format { .. })));
        let mut bad_version = good.clone();
        bad_version[4] = 2;
        assert!(matches!(GgufFile::parse(bad_version), Err(GgufError::Version(2))));
        // A tensor count claiming more records than the file holds is refused before any
        // allocation.
        let mut huge = good.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(GgufFile::parse(huge).unwrap_err().to_string().contains("more than the file holds"));
    }

    /// Found by fuzz/ (gguf): an empty tensor in a file that ends before its aligned data
    /// section was sliced past the file's end.
    #[test]
    fn a_file_ending_before_its_data_section_is_refused() {
        let mut w = GgufWriter::new();
        w.tensor("empty", vec![0], TensorType::F32, Vec::new()).unwrap();
        let bytes = w.to_bytes();
        // Magic, version and two counts, then the record: name, dimension count, one
        // dimension, type, offset. The data section would start at the next multiple of 32.
        let header_end = 24 + (8 + "empty".len()) + 4 + 8 + 4 + 8;
        assert_eq!(bytes.len(), 64);
        let err = GgufFile::parse(bytes[..header_end].to_vec()).unwrap_err();
        assert!(err.to_string().contains("before its data section"), "{err}");
        assert_eq!(GgufFile::parse(bytes).unwrap().tensor_f32("empty").unwrap(), Vec::<f32>::new());
    }

    /// Found by fuzz/ (gguf): a q8_0 tensor of nearly 2^64 elements overflowed the byte count.
    #[test]
    fn byte_counts_that_overflow_are_none() {
        assert_eq!(TensorType::Q8_0.bytes(u64::MAX - 31), None);
        assert_eq!(TensorType::F32.bytes(1 << 63), None);
        assert_eq!(TensorType::Q8_0.bytes(64), Some(68));
    }

    /// Found by fuzz/ (gguf): a name changed into another tensor's made the first shadow the
    /// second, read with the wrong element count.
    #[test]
    fn names_and_keys_that_appear_twice_are_refused() {
        let mut w = GgufWriter::new();
        w.tensor("t", vec![2], TensorType::F32, vec![0; 8]).unwrap();
        w.tensor("t", vec![3], TensorType::F32, vec![0; 12]).unwrap();
        assert!(GgufFile::parse(w.to_bytes()).unwrap_err().to_string().contains("appears twice"));
        let mut w = GgufWriter::new();
        w.metadata("k", Value::U8(1));
        w.metadata("k", Value::U8(2));
        assert!(GgufFile::parse(w.to_bytes()).unwrap_err().to_string().contains("appears twice"));
    }

    #[test]
    fn a_tensor_whose_bytes_do_not_match_its_shape_is_refused() {
        let mut w = GgufWriter::new();
        let err = w.tensor("t", vec![4, 2], TensorType::F32, vec![0; 12]).unwrap_err();
        assert!(err.to_string().contains("tensor `t`"), "{err}");
        assert!(w.tensor("q", vec![31], TensorType::Q8_0, vec![0; 34]).is_err());
    }
}
