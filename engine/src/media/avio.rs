//! libavformat reading a source while it downloads: a custom `AVIOContext`
//! whose read and seek callbacks go to a [`Reader`] of the worker's shared
//! cache (docs/design/sources.md, "Streaming sources").
//!
//! The callbacks run wherever libavformat reads: opening (on the blocking
//! pool, `task::play`) and demuxing (the blocking pool, `media::demux`), so
//! a read may block until the download brings its bytes.
//!
//! Who frees the `AVIOContext`: libavformat never closes an I/O context its
//! caller supplied (`AVFMT_FLAG_CUSTOM_IO`), and `ffmpeg-next`'s `Input`
//! only calls `avformat_close_input`. So once the demuxer is chosen, the
//! format context gets a copy of its `AVInputFormat` whose `read_close` runs
//! the demuxer's own and then frees our context, its buffer and the
//! [`Reader`] (which unpins the cache entry); the original format is put back
//! before `avformat_free_context` reads it. The whole source of an
//! `ffmpeg_next::format::context::Input` is thus owned by it, as for a file.
//! Nested opens (a playlist inside the stream naming other files) are refused
//! by an `io_open` that opens nothing.

use crate::error::{Fault, MediaError, WorkerError};
use crate::source::cache::Reader;
use ff::ffi;
use ffmpeg_next as ff;
use std::ffi::{c_int, c_void, CString};
use std::ptr;

/// libavformat's I/O buffer for a stream (its default is 32 KiB).
const BUFFER_BYTES: usize = 64 * 1024;

/// What the callbacks reach through `opaque`; owned by the format context
/// once opened (see the module's header).
struct Io {
    reader: Reader,
    pb: *mut ffi::AVIOContext,
    /// The demuxer's own format, and our copy with `read_close` replaced.
    original: *const ffi::AVInputFormat,
    format: ffi::AVInputFormat,
    /// The demuxer is open: a size asked for now is for a seek.
    opened: bool,
    /// The first read error: logged once (libavformat asks again after a
    /// failure), kept for [`source_error`].
    error: Option<WorkerError>,
}

/// Opens a demuxer over `reader` and reads its streams' parameters.
pub fn open_stream(reader: Reader) -> Result<ff::format::context::Input, ff::Error> {
    let enomem = ff::Error::Other { errno: ffi::ENOMEM };
    // SAFETY: every pointer is checked after allocation; on each failure path
    // exactly what was allocated so far is freed once (`free_io` for the I/O
    // context and `Io`, libavformat for a context it failed to open); after
    // the swap below, `avformat_close_input` frees everything through
    // `close_stream`.
    unsafe {
        let buffer = ffi::av_malloc(BUFFER_BYTES) as *mut u8;
        if buffer.is_null() {
            return Err(enomem);
        }
        let io = Box::into_raw(Box::new(Io {
            reader,
            pb: ptr::null_mut(),
            original: ptr::null(),
            format: std::mem::zeroed(),
            opened: false,
            error: None,
        }));
        let pb = ffi::avio_alloc_context(
            buffer,
            BUFFER_BYTES as c_int,
            0,
            io as *mut c_void,
            Some(read_packet),
            None,
            Some(seek),
        );
        if pb.is_null() {
            ffi::av_free(buffer as *mut c_void);
            drop(Box::from_raw(io));
            return Err(enomem);
        }
        (*io).pb = pb;
        let mut ctx = ffi::avformat_alloc_context();
        if ctx.is_null() {
            free_io(io);
            return Err(enomem);
        }
        (*ctx).pb = pb;
        (*ctx).io_open = Some(refuse_open);
        let name = CString::default();
        let r = ffi::avformat_open_input(&mut ctx, name.as_ptr(), ptr::null(), ptr::null_mut());
        if r < 0 {
            // libavformat freed the format context, never a caller's I/O context.
            free_io(io);
            return Err(ff::Error::from(r));
        }
        (*io).original = (*ctx).iformat;
        (*io).format = *(*ctx).iformat;
        (*io).format.read_close = Some(close_stream);
        (*ctx).iformat = &(*io).format;
        (*ctx).opaque = io as *mut c_void;
        let r = ffi::avformat_find_stream_info(ctx, ptr::null_mut());
        if r < 0 {
            ffi::avformat_close_input(&mut ctx);
            return Err(ff::Error::from(r));
        }
        (*io).opened = true;
        Ok(ff::format::context::Input::wrap(ctx))
    }
}

/// Why a streamed source could not be read, once a read failed: the
/// download's fault and words (cause, attempt, the byte playback needed), for
/// the item's error (which names the task, item, URL and offset) rather than
/// an errno. `None` for a local file or a stream that has not failed.
pub fn source_error(input: &ff::format::context::Input) -> Option<MediaError> {
    // SAFETY: `opaque` is null on every format context but ours (libavformat
    // and ffmpeg-next never set it), where it is our `Io`, alive as long as
    // `input`; no read runs while the caller holds `&input`.
    let error = unsafe {
        let io = (*input.as_ptr()).opaque as *const Io;
        io.as_ref().and_then(|io| io.error.clone())
    }?;
    let cause = match &error {
        WorkerError::Source {
            cause,
            attempt,
            attempts,
            ..
        } if *attempt > 0 => format!("source: {cause} (attempt {attempt} of {attempts})"),
        WorkerError::Source { cause, .. } => format!("source: {cause}"),
        WorkerError::Policy { reason, .. } => format!("source refused by policy: {reason}"),
        other => format!("source: {other}"),
    };
    Some(MediaError::new(error.fault(), cause))
}

/// Frees our I/O context, its current buffer (libavformat may have replaced
/// the one we gave it) and the `Io` with its reader.
///
/// # Safety
/// `io` came from `Box::into_raw` in [`open_stream`], and nothing uses it or
/// its `pb` afterwards.
unsafe fn free_io(io: *mut Io) {
    let mut pb = (*io).pb;
    if !pb.is_null() {
        ffi::av_freep(ptr::addr_of_mut!((*pb).buffer) as *mut c_void);
        ffi::avio_context_free(&mut pb);
    }
    drop(Box::from_raw(io));
}

/// The demuxer's `read_close`, then ours: frees the stream's I/O.
unsafe extern "C" fn close_stream(s: *mut ffi::AVFormatContext) -> c_int {
    // SAFETY: only installed on format contexts whose `opaque` is our `Io`
    // (open_stream); `avformat_close_input` calls it once, before freeing
    // the context and without touching a caller-supplied `pb` afterwards.
    unsafe {
        let io = (*s).opaque as *mut Io;
        if io.is_null() {
            return 0;
        }
        let original = (*io).original;
        let r = match (*original).read_close {
            Some(close) => close(s),
            None => 0,
        };
        (*s).iformat = original;
        (*s).opaque = ptr::null_mut();
        (*s).pb = ptr::null_mut();
        free_io(io);
        r
    }
}

/// Nested opens (a playlist naming other files) are refused: the stream is
/// the only thing this demuxer may read.
unsafe extern "C" fn refuse_open(
    _s: *mut ffi::AVFormatContext,
    _pb: *mut *mut ffi::AVIOContext,
    _url: *const std::ffi::c_char,
    _flags: c_int,
    _options: *mut *mut ffi::AVDictionary,
) -> c_int {
    ffi::AVERROR(ffi::EACCES)
}

/// The errno a source failure reads as in libavformat's error chain (its
/// words are [`source_error`]'s).
fn errno_of(fault: Fault) -> c_int {
    match fault {
        Fault::TimedOut => ffi::ETIMEDOUT,
        Fault::StreamEnded => ffi::ECONNRESET,
        Fault::Local => ffi::ECANCELED,
        _ => ffi::EIO,
    }
}

unsafe extern "C" fn read_packet(opaque: *mut c_void, buf: *mut u8, size: c_int) -> c_int {
    // SAFETY: `opaque` is the `Io` of this I/O context, alive until
    // `close_stream`; libavformat reads from one thread at a time and hands a
    // buffer of `size` writable bytes.
    let (io, out) = unsafe {
        (
            &mut *(opaque as *mut Io),
            std::slice::from_raw_parts_mut(buf, size.max(0) as usize),
        )
    };
    // A panic must not unwind into C.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| io.reader.read(out)));
    match r {
        Ok(Ok(0)) => ffi::AVERROR_EOF,
        Ok(Ok(n)) => n as c_int,
        Ok(Err(e)) => {
            let errno = errno_of(e.fault());
            if io.error.is_none() {
                // The demuxer reports only an errno: the source's own words are here.
                tracing::warn!(error = %e, "source read failed");
                io.error = Some(e);
            }
            ffi::AVERROR(errno)
        }
        Err(_) => ffi::AVERROR(ffi::EIO),
    }
}

unsafe extern "C" fn seek(opaque: *mut c_void, offset: i64, whence: c_int) -> i64 {
    // SAFETY: as in `read_packet`.
    let io = unsafe { &mut *(opaque as *mut Io) };
    let len = io.reader.size();
    if whence & ffi::AVSEEK_SIZE != 0 {
        // Unknown while an HLS source's segments download. Opening goes on
        // without it (as for a live stream); a seek afterwards (a cut: MPEG-TS
        // seeks by a byte-based search) waits for the whole file.
        let len = match len {
            None if io.opened => io.reader.size_when_known(),
            len => len,
        };
        return len.map_or(ffi::AVERROR(ffi::ENOSYS) as i64, |l| l as i64);
    }
    let base = match whence & !ffi::AVSEEK_FORCE {
        0 => 0,                           // SEEK_SET
        1 => io.reader.position() as i64, // SEEK_CUR
        2 => match len {
            Some(l) => l as i64, // SEEK_END
            None => return ffi::AVERROR(ffi::ENOSYS) as i64,
        },
        _ => return ffi::AVERROR(ffi::EINVAL) as i64,
    };
    match base.checked_add(offset) {
        Some(to) if to >= 0 => {
            io.reader.seek(to as u64);
            to
        }
        _ => ffi::AVERROR(ffi::EINVAL) as i64,
    }
}
