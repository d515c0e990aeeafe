//! JSON payloads in one pass, with the sample limit enforced while
//! parsing. A `serde_json::Value` tree costs tens of bytes per payload
//! byte, and was built before the sample count could be checked: under a
//! raised `input.max_payload_bytes`, a batch of 2 M rows became a tree of
//! hundreds of megabytes only to be refused as `too_many_samples`. Here
//! only the samples are kept, at most `max_samples` of them; every other
//! value is skipped without allocating. The errors, and their precedence,
//! are those of a parse into a tree followed by a walk over it (syntax
//! first, then shape, count, timing, and the first bad sample in order),
//! but for one: values skipped are not held to serde_json's nesting limit
//! of 128 (they are skipped without recursion, so depth costs nothing).
//! The device field of a payload is read the same way.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use serde_json::Value;

use super::{finite, DecodeError, Decoder, DeviceFieldError, Samples};

/// A value as far as decoding cares.
#[derive(Debug, Clone, Copy)]
pub(super) enum Field {
    Null,
    Number(f64),
    Other,
}

impl Field {
    fn number(self, name: &str) -> Result<f64, DecodeError> {
        match self {
            Field::Number(n) => finite(n, name),
            Field::Null | Field::Other => Err(DecodeError::NotANumber {
                field: name.to_string(),
            }),
        }
    }

    /// `t`, `t0`, `interval_ms`: absent or null is none.
    fn optional(field: Option<Field>, name: &str) -> Result<Option<f64>, DecodeError> {
        match field {
            None | Some(Field::Null) => Ok(None),
            Some(field) => field.number(name).map(Some),
        }
    }
}

/// Visits every scalar kind serde_json produces with one answer, so that a
/// visitor expecting a container classifies the rest instead of failing.
macro_rules! scalars {
    ($value:expr) => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Field, E> {
        Ok(Field::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Field, E> {
        Ok(Field::Other)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Field, E> {
        Ok(Field::Number(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Field, E> {
        Ok(Field::Number(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Field, E> {
        Ok(Field::Number(v))
    }
    fn visit_str<E>(self, _: &str) -> Result<Field, E> {
        Ok(Field::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field, A::Error> {
        IgnoredAny.visit_seq(seq).map(|_| Field::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field, A::Error> {
        IgnoredAny.visit_map(map).map(|_| Field::Other)
    }
}

impl<'de> serde::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

/// What an object key means to the decoder.
#[derive(Default)]
struct Roles {
    t: bool,
    t0: bool,
    interval: bool,
    values: bool,
    channel: Option<usize>,
}

impl Roles {
    fn any(&self) -> bool {
        self.t || self.t0 || self.interval || self.channel.is_some()
    }
}

struct KeySeed<'a>(&'a [String]);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Roles;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Roles, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Roles;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E>(self, key: &str) -> Result<Roles, E> {
        Ok(Roles {
            t: key == "t",
            t0: key == "t0",
            interval: key == "interval_ms",
            values: key == "values",
            channel: self.0.iter().position(|c| c == key),
        })
    }
}

/// The state of one payload's decoding.
struct State<'a> {
    channels: &'a [String],
    max_samples: usize,
    out: &'a mut Samples,
    /// A row's fields, reused.
    row: Vec<Field>,
}

/// The fields of one object that matter; `values` seen only in a batch.
#[derive(Default)]
struct ObjectFields {
    t: Option<Field>,
    t0: Option<Field>,
    interval: Option<Field>,
    channels: Vec<Option<Field>>,
    /// `values` was given: `Ok(rows)`, or `Err(())` when not an array.
    values: Option<Result<Rows, ()>>,
}

/// A batch's rows: how many, and the first bad one. The good rows' values
/// are in `out.values` (up to the first bad one).
#[derive(Default)]
struct Rows {
    count: usize,
    first_error: Option<DecodeError>,
}

/// What decides a batch once its rows are read (shared with the plain
/// scanner of [`super::json_fast`]): the rows' values are in `out.values`.
pub(super) struct BatchFields {
    pub t0: Option<Field>,
    pub interval: Option<Field>,
    pub count: usize,
    /// The first bad row.
    pub first_error: Option<DecodeError>,
}

impl BatchFields {
    /// Checks the count and the timing; each row's timestamp into `out`.
    pub(super) fn finish(self, max_samples: usize, out: &mut Samples) -> Result<(), DecodeError> {
        super::check_count(self.count, max_samples)?;
        let t0 = Field::optional(self.t0, "t0")?;
        let interval = match (t0, self.interval) {
            (None, None | Some(Field::Null)) => None,
            (Some(_), None | Some(Field::Null)) => return Err(DecodeError::BadInterval),
            (_, Some(field)) => {
                let interval = field.number("interval_ms")?;
                if interval <= 0.0 {
                    return Err(DecodeError::BadInterval);
                }
                Some(interval)
            }
        };
        if let Some(error) = self.first_error {
            return Err(error);
        }
        out.t_ms
            .extend((0..self.count).map(|i| t0.zip(interval).map(|(t0, dt)| t0 + dt * i as f64)));
        Ok(())
    }
}

impl State<'_> {
    /// A sample object: its timestamp, then each channel in order.
    fn push_sample(&mut self, fields: &ObjectFields) -> Result<(), DecodeError> {
        let t = Field::optional(fields.t, "t")?;
        let start = self.out.values.len();
        for (name, field) in self.channels.iter().zip(&fields.channels) {
            let number = field
                .ok_or_else(|| DecodeError::MissingChannel(name.clone()))
                .and_then(|f| f.number(name));
            match number {
                Ok(v) => self.out.values.push(v as f32),
                Err(e) => {
                    self.out.values.truncate(start);
                    return Err(e);
                }
            }
        }
        self.out.t_ms.push(t);
        Ok(())
    }

    /// A batch object, once all its keys are read.
    fn finish_batch(&mut self, fields: ObjectFields) -> Result<(), DecodeError> {
        let rows = match fields.values {
            Some(Ok(rows)) => rows,
            _ => return Err(DecodeError::Shape),
        };
        BatchFields {
            t0: fields.t0,
            interval: fields.interval,
            count: rows.count,
            first_error: rows.first_error,
        }
        .finish(self.max_samples, self.out)
    }

    fn check_count(&self, count: usize) -> Result<(), DecodeError> {
        super::check_count(count, self.max_samples)
    }
}

/// The whole payload: a sample object, a batch object or an array of samples.
struct Top<'s, 'a>(&'s mut State<'a>);

impl<'de> DeserializeSeed<'de> for Top<'_, '_> {
    type Value = Result<(), DecodeError>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = Result<(), DecodeError>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON payload")
    }
    scalars!(Err(DecodeError::Shape));
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let fields = Object {
            state: &mut *self.0,
            batch: true,
        }
        .visit_map(map)?;
        Ok(if fields.values.is_some() {
            self.0.finish_batch(fields)
        } else {
            self.0.push_sample(&fields)
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let state = self.0;
        let (mut count, mut first_error) = (0usize, None);
        loop {
            let healthy = first_error.is_none() && count < state.max_samples;
            let item = if healthy {
                seq.next_element_seed(Item(&mut *state))?
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| Ok(()))
            };
            let Some(item) = item else { break };
            count += 1;
            if let Err(e) = item {
                first_error.get_or_insert(e);
            }
        }
        Ok(state
            .check_count(count)
            .and(first_error.map_or(Ok(()), Err)))
    }
}

/// One element of an array of samples.
struct Item<'s, 'a>(&'s mut State<'a>);

impl<'de> DeserializeSeed<'de> for Item<'_, '_> {
    type Value = Result<(), DecodeError>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Item<'_, '_> {
    type Value = Result<(), DecodeError>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sample object")
    }
    scalars!(Err(DecodeError::Shape));
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_seq(seq).map(|_| Err(DecodeError::Shape))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let fields = Object {
            state: &mut *self.0,
            batch: false,
        }
        .visit_map(map)?;
        Ok(self.0.push_sample(&fields))
    }
}

/// An object's keys; `values` counts only when `batch`.
struct Object<'s, 'a> {
    state: &'s mut State<'a>,
    batch: bool,
}

impl Object<'_, '_> {
    fn visit_map<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<ObjectFields, A::Error> {
        let state = self.state;
        let mut fields = ObjectFields {
            channels: vec![None; state.channels.len()],
            ..ObjectFields::default()
        };
        while let Some(roles) = map.next_key_seed(KeySeed(state.channels))? {
            if self.batch && roles.values {
                // As in a tree, the last of duplicate keys wins.
                state.out.clear();
                fields.values = Some(map.next_value_seed(RowsSeed(&mut *state))?);
            } else if roles.any() {
                let field: Field = map.next_value()?;
                if roles.t {
                    fields.t = Some(field);
                }
                if roles.t0 {
                    fields.t0 = Some(field);
                }
                if roles.interval {
                    fields.interval = Some(field);
                }
                if let Some(i) = roles.channel {
                    fields.channels[i] = Some(field);
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(fields)
    }
}

/// A batch's `values`: rows of one number per channel.
struct RowsSeed<'s, 'a>(&'s mut State<'a>);

impl<'de> DeserializeSeed<'de> for RowsSeed<'_, '_> {
    type Value = Result<Rows, ()>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_, '_> {
    type Value = Result<Rows, ()>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }
    scalars!(Err(()));
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map).map(|_| Err(()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let state = self.0;
        let mut rows = Rows::default();
        loop {
            let healthy = rows.first_error.is_none() && rows.count < state.max_samples;
            let row = if healthy {
                seq.next_element_seed(Row {
                    state: &mut *state,
                    line: rows.count + 1,
                })?
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| Ok(()))
            };
            let Some(row) = row else { break };
            rows.count += 1;
            if let Err(e) = row {
                rows.first_error.get_or_insert(e);
            }
        }
        Ok(Ok(rows))
    }
}

/// One row of a batch, numbered from 1.
struct Row<'s, 'a> {
    state: &'s mut State<'a>,
    line: usize,
}

impl<'de> DeserializeSeed<'de> for Row<'_, '_> {
    type Value = Result<(), DecodeError>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Row<'_, '_> {
    type Value = Result<(), DecodeError>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row of numbers")
    }
    scalars!(Err(DecodeError::Shape));
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map).map(|_| Err(DecodeError::Shape))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let state = self.state;
        let channels = state.channels.len();
        state.row.clear();
        let mut got = 0usize;
        loop {
            let more = if got < channels {
                seq.next_element::<Field>()?.map(|f| state.row.push(f))
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| ())
            };
            if more.is_none() {
                break;
            }
            got += 1;
        }
        if got != channels {
            return Ok(Err(DecodeError::FieldCount {
                line: self.line,
                expected: channels,
                got,
            }));
        }
        let start = state.out.values.len();
        for (field, name) in state.row.iter().zip(state.channels) {
            match field.number(name) {
                Ok(v) => state.out.values.push(v as f32),
                Err(e) => {
                    state.out.values.truncate(start);
                    return Ok(Err(e));
                }
            }
        }
        Ok(Ok(()))
    }
}

impl Decoder {
    /// Any JSON payload, through serde_json (the plain batch is read by
    /// [`super::json_fast`] first).
    pub(super) fn decode_json(&self, text: &str, out: &mut Samples) -> Result<(), DecodeError> {
        let mut state = State {
            channels: &self.channels,
            max_samples: self.max_samples,
            out,
            row: Vec::with_capacity(self.channels.len()),
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let syntax = |e: serde_json::Error| DecodeError::Syntax(e.to_string());
        let decoded = Top(&mut state).deserialize(&mut de).map_err(syntax)?;
        de.end().map_err(syntax)?;
        decoded
    }
}

impl Decoder {
    /// The device id `payload` names in `field`; see [`super::json_device_field`].
    pub(super) fn device_field(payload: &[u8], field: &str) -> Result<String, DeviceFieldError> {
        let mut de = serde_json::Deserializer::from_slice(payload);
        let found = Holder { field, top: true }
            .deserialize(&mut de)
            .and_then(|found| de.end().map(|()| found))
            .map_err(|e| e.to_string())?;
        match found {
            Some(Value::String(id)) if !id.is_empty() => Ok(id),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            Some(other) => Err(DeviceFieldError(format!(
                "device field {field:?} must be a non-empty string or an integer, got {other}"
            ))),
            None => Err(DeviceFieldError(format!("no device field {field:?}"))),
        }
    }
}

/// The object holding the device field: the payload, or the first element
/// of an array payload. Only the field's value is kept.
struct Holder<'f> {
    field: &'f str,
    /// Whether an array here is the payload (whose first element holds it).
    top: bool,
}

impl<'de> DeserializeSeed<'de> for Holder<'_> {
    type Value = Option<Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Holder<'_> {
    type Value = Option<Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON payload")
    }
    scalars!(None);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = if self.top {
            seq.next_element_seed(Holder {
                field: self.field,
                top: false,
            })?
            .flatten()
        } else {
            None
        };
        IgnoredAny.visit_seq(seq)?;
        Ok(first)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key_seed(FieldKey(self.field))? {
            if key {
                // As in a tree, the last of duplicate keys wins.
                found = Some(map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Whether a key is the device field.
struct FieldKey<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for FieldKey<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldKey<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    use super::*;

    /// Counts what this thread has allocated, so that one decode's peak can
    /// be measured while other tests run on other threads.
    struct Counting;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn count(bytes: isize) {
        let _ = LIVE.try_with(|live| {
            live.set(live.get() + bytes);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
        });
    }

    // SAFETY: every call is forwarded to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                count(layout.size() as isize);
            }
            p
        }
        unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
            unsafe { System.dealloc(p, layout) };
            count(-(layout.size() as isize));
        }
        unsafe fn realloc(&self, p: *mut u8, layout: Layout, size: usize) -> *mut u8 {
            let q = unsafe { System.realloc(p, layout, size) };
            if !q.is_null() {
                count(size as isize - layout.size() as isize);
            }
            q
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    /// The most `f` had allocated at once, beyond what was live before.
    fn peak_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let start = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(start));
        let result = f();
        (result, (PEAK.with(Cell::get) - start) as usize)
    }

    fn decoder(max_samples: usize) -> Decoder {
        Decoder::new(
            vec!["ax".into(), "ay".into(), "az".into()],
            64 << 20,
            max_samples,
        )
    }

    #[test]
    fn a_giant_batch_is_refused_without_building_it() {
        let rows = vec!["[0.01,-0.02,0.98]"; 2_000_000].join(",");
        let payload = format!(r#"{{"t0": 0, "interval_ms": 20, "values": [{rows}]}}"#);
        let mut out = Samples::default();
        let (result, peak) = peak_bytes(|| decoder(4096).decode_json(&payload, &mut out));
        assert_eq!(
            result.unwrap_err(),
            DecodeError::TooManySamples {
                got: 2_000_000,
                limit: 4096
            }
        );
        // A tree of the payload's values took over 200 MB here.
        assert!(peak < 1 << 20, "{peak} bytes for a refused batch");
        let (device, peak) = peak_bytes(|| Decoder::device_field(payload.as_bytes(), "id"));
        assert!(device.unwrap_err().0.contains("no device field"));
        assert!(peak < 64 << 10, "{peak} bytes to look for a device field");
    }

    #[test]
    fn deep_nesting_costs_no_stack_and_no_memory() {
        let deep = |open: &str, close: &str| open.repeat(100_000) + &close.repeat(100_000);
        let arrays = deep("[", "]");
        let objects = deep(r#"{"a":"#, "}").replacen(r#"{"a":}"#, "{}", 1);
        let extra = format!(r#"{{"ax": 1, "ay": 2, "az": 3, "x": {arrays}, "id": "w7"}}"#);
        let mut out = Samples::default();
        for payload in [&arrays, &objects] {
            let (result, peak) = peak_bytes(|| decoder(4096).decode_json(payload, &mut out));
            assert!(result.is_err());
            assert!(peak < 1 << 20, "{peak}");
            assert!(Decoder::device_field(payload.as_bytes(), "id").is_err());
        }
        decoder(4096).decode_json(&extra, &mut out).unwrap();
        assert_eq!(out.values, [1.0, 2.0, 3.0]);
        assert_eq!(Decoder::device_field(extra.as_bytes(), "id").unwrap(), "w7");
    }

    #[test]
    fn errors_keep_the_precedence_of_a_tree_walk() {
        let reason = |payload: &str| {
            decoder(2)
                .decode_json(payload, &mut Samples::default())
                .map_err(|e| e.reason())
        };
        // Syntax anywhere wins; then the count, the timing, the first bad row.
        assert_eq!(reason(r#"{"values": [[1,2,"x"]], "t0": }"#), Err("syntax"));
        assert_eq!(
            reason(r#"{"values": [[1],[1],[1]], "t0": "x"}"#),
            Err("too_many_samples")
        );
        assert_eq!(reason(r#"{"values": [[1]], "t0": 1}"#), Err("bad_interval"));
        assert_eq!(reason(r#"{"values": [[1,2,3],[1,2]]}"#), Err("field_count"));
        assert_eq!(
            reason(r#"{"values": [[1,2,3],[1,2,"3"]]}"#),
            Err("not_a_number")
        );
        assert_eq!(reason(r#"{"values": {"a": 1}}"#), Err("shape"));
        assert_eq!(reason(r#"[{"ax":1,"ay":2,"az":3}, 7]"#), Err("shape"));
        assert_eq!(reason(r#"[{"ax":1}, {}, {}]"#), Err("too_many_samples"));
        assert_eq!(reason(r#"{"ax":1,"ay":2,"az":null}"#), Err("not_a_number"));
        assert_eq!(reason(r#"{"ax":1,"ay":2,"az":3} x"#), Err("syntax"));
        // The last of duplicate keys wins, as in a tree.
        assert_eq!(reason(r#"{"values": "x", "values": [[1,2,3]]}"#), Ok(()));
        assert_eq!(reason(r#"{"ax":"x","ay":2,"az":3,"ax":1}"#), Ok(()));
        let mut out = Samples::default();
        decoder(4)
            .decode_json(r#"{"values": [[9,9,9]], "values": [[1,2,3]]}"#, &mut out)
            .unwrap();
        assert_eq!(out.values, [1.0, 2.0, 3.0]);
    }
}
