//! A safe pull parser over libyaml's event API (`unsafe-libyaml-norway`, the libyaml
//! translation that serde_norway is built on). This is the only module of the crate with
//! `unsafe` code; everything above it sees borrowed, safe events.
//!
//! Why libyaml and not a pure-Rust event parser: libyaml's scanner looks at most one line or
//! 1024 characters ahead to decide whether a token starts a simple key, in block and flow
//! context alike, so memory stays bounded while events stream. The saphyr/yaml-rust2 scanners
//! (measured, saphyr-parser 0.3.4) never retire a possible key inside a flow collection and
//! tokenise a whole top-level `[…]`/`{…}` before the first event: 385 MiB of heap for a 3 MB
//! flow list, where libyaml stays under 200 KiB.

#![allow(unsafe_code)]

use std::ffi::CStr;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

use unsafe_libyaml_norway as unsafe_sys;

/// A libyaml parse error, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// What libyaml (or the tree builder) reported.
    pub problem: String,
    /// 1-based line of the problem (0 when unknown).
    pub line: u64,
    /// 1-based column of the problem (0 when unknown).
    pub column: u64,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{} at line {} column {}",
                self.problem, self.line, self.column
            )
        } else {
            f.write_str(&self.problem)
        }
    }
}

impl std::error::Error for YamlError {}

/// How a scalar was written: plain scalars are resolved (null, bool, numbers), the others are
/// always strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Plain,
    Quoted,
}

/// One event, borrowing from the parser until the next call of [`Parser::next`].
#[derive(Debug)]
pub(crate) enum Event<'e> {
    StreamStart,
    StreamEnd,
    DocumentStart,
    DocumentEnd,
    Alias(&'e [u8]),
    Scalar {
        anchor: Option<&'e [u8]>,
        tag: Option<&'e [u8]>,
        value: &'e [u8],
        style: Style,
    },
    SequenceStart {
        anchor: Option<&'e [u8]>,
    },
    SequenceEnd,
    MappingStart {
        anchor: Option<&'e [u8]>,
    },
    MappingEnd,
}

/// A libyaml parser reading a UTF-8 string it borrows.
pub(crate) struct Parser<'input> {
    /// Boxed: libyaml keeps pointers into its own struct (the string read handler).
    parser: Box<MaybeUninit<unsafe_sys::yaml_parser_t>>,
    event: MaybeUninit<unsafe_sys::yaml_event_t>,
    /// Whether `event` holds an event that must be deleted.
    has_event: bool,
    /// Whether `parser` was initialised (and must be deleted).
    initialized: bool,
    _input: PhantomData<&'input [u8]>,
}

impl<'input> Parser<'input> {
    pub(crate) fn new(input: &'input str) -> Result<Self, YamlError> {
        let mut p = Parser {
            parser: Box::new_uninit(),
            event: MaybeUninit::uninit(),
            has_event: false,
            initialized: false,
            _input: PhantomData,
        };
        let parser = p.parser.as_mut_ptr();
        // SAFETY: `parser` points to a boxed, writable `yaml_parser_t`-sized allocation, which
        // `yaml_parser_initialize` fills in completely. The input string outlives the parser
        // (the `'input` lifetime), and the box keeps the parser's address stable for the
        // pointers libyaml stores into it.
        unsafe {
            if unsafe_sys::yaml_parser_initialize(parser).fail {
                return Err(YamlError {
                    problem: "libyaml could not allocate its parser".into(),
                    line: 0,
                    column: 0,
                });
            }
            p.initialized = true;
            unsafe_sys::yaml_parser_set_encoding(parser, unsafe_sys::YAML_UTF8_ENCODING);
            unsafe_sys::yaml_parser_set_input_string(parser, input.as_ptr(), input.len() as u64);
        }
        Ok(p)
    }

    fn drop_event(&mut self) {
        if self.has_event {
            self.has_event = false;
            // SAFETY: `has_event` is set only after `yaml_parser_parse` succeeded, so the
            // event is initialised and owned by us; it is deleted exactly once.
            unsafe { unsafe_sys::yaml_event_delete(self.event.as_mut_ptr()) };
        }
    }

    /// The next event. After an error every further call returns an error.
    pub(crate) fn next(&mut self) -> Result<Event<'_>, YamlError> {
        self.drop_event();
        let parser = self.parser.as_mut_ptr();
        // SAFETY: the parser is initialised (constructor) and not yet deleted (Drop). On
        // success `yaml_parser_parse` initialises the event, which we own until
        // `drop_event`. The slices built from its pointers borrow `self` mutably, so they
        // cannot outlive the event (the next call or drop deletes it).
        unsafe {
            if (&*parser).error != unsafe_sys::YAML_NO_ERROR {
                return Err(error(parser));
            }
            if unsafe_sys::yaml_parser_parse(parser, self.event.as_mut_ptr()).fail {
                return Err(error(parser));
            }
            self.has_event = true;
            let ev = &*self.event.as_ptr();
            Ok(match ev.type_ {
                unsafe_sys::YAML_STREAM_START_EVENT => Event::StreamStart,
                unsafe_sys::YAML_STREAM_END_EVENT => Event::StreamEnd,
                unsafe_sys::YAML_DOCUMENT_START_EVENT => Event::DocumentStart,
                unsafe_sys::YAML_DOCUMENT_END_EVENT => Event::DocumentEnd,
                unsafe_sys::YAML_ALIAS_EVENT => {
                    Event::Alias(cstr(ev.data.alias.anchor).unwrap_or(b""))
                }
                unsafe_sys::YAML_SCALAR_EVENT => {
                    let s = &ev.data.scalar;
                    let value = if s.value.is_null() || s.length == 0 {
                        &[][..]
                    } else {
                        std::slice::from_raw_parts(s.value, s.length as usize)
                    };
                    Event::Scalar {
                        anchor: cstr(s.anchor),
                        tag: cstr(s.tag),
                        value,
                        style: if s.style == unsafe_sys::YAML_PLAIN_SCALAR_STYLE {
                            Style::Plain
                        } else {
                            Style::Quoted
                        },
                    }
                }
                unsafe_sys::YAML_SEQUENCE_START_EVENT => Event::SequenceStart {
                    anchor: cstr(ev.data.sequence_start.anchor),
                },
                unsafe_sys::YAML_SEQUENCE_END_EVENT => Event::SequenceEnd,
                unsafe_sys::YAML_MAPPING_START_EVENT => Event::MappingStart {
                    anchor: cstr(ev.data.mapping_start.anchor),
                },
                unsafe_sys::YAML_MAPPING_END_EVENT => Event::MappingEnd,
                _ => {
                    return Err(YamlError {
                        problem: "libyaml returned an unknown event".into(),
                        line: 0,
                        column: 0,
                    });
                }
            })
        }
    }
}

impl Drop for Parser<'_> {
    fn drop(&mut self) {
        self.drop_event();
        if self.initialized {
            // SAFETY: initialised in the constructor, deleted exactly once here.
            unsafe { unsafe_sys::yaml_parser_delete(self.parser.as_mut_ptr()) };
        }
    }
}

impl fmt::Debug for Parser<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Parser")
    }
}

/// A NUL-terminated libyaml string as bytes (`None` for a null pointer).
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that lives as long as `'a`.
unsafe fn cstr<'a>(p: *const u8) -> Option<&'a [u8]> {
    if p.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller.
    Some(unsafe { CStr::from_ptr(p.cast()) }.to_bytes())
}

/// The parser's error state as a [`YamlError`].
///
/// # Safety
/// `parser` points to an initialised parser.
unsafe fn error(parser: *const unsafe_sys::yaml_parser_t) -> YamlError {
    // SAFETY: guaranteed by the caller; libyaml's `problem` is null or a static C string.
    unsafe {
        let parser = &*parser;
        let problem = cstr(parser.problem.cast())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_else(|| "invalid YAML".into());
        let mark = parser.problem_mark;
        YamlError {
            problem,
            line: mark.line + 1,
            column: mark.column + 1,
        }
    }
}
