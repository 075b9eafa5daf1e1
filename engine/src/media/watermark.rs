//! Watermarks (`wmimage` at `wmposition`): a PNG or JPEG decoded once with
//! libav into YUV 4:2:0 with alpha, then blended into each output picture of
//! its item after scaling (transcode mode only: a watermark makes its task
//! transcode its video). Its own size, clipped to the picture; a margin from
//! the picture's edges (docs/contract.md#src).
//!
//! Blending is ours, a few lines per plane, rather than a libavfilter graph:
//! one `overlay` with a fixed image needs no graph, and the picture never
//! leaves the buffers the encoder takes.

use super::open_input;
use ff::format::Pixel;
use ffmpeg_next as ff;
use std::path::Path;
use vodfleet_proto::command::WatermarkPosition;

/// The biggest image taken (either side, pixels): a watermark, not a picture.
pub const MAX_SIDE: u32 = 4096;

/// A decoded watermark: planes of YUVA 4:2:0, tightly packed.
pub struct Image {
    pub width: u32,
    pub height: u32,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
    /// Full-resolution alpha (255 where the image has none).
    a: Vec<u8>,
}

/// Decodes the first picture of the image file at `path`.
pub fn load(path: &Path) -> Result<Image, String> {
    let mut input = open_input(path).map_err(|e| format!("not an image: {e}"))?;
    let stream = input
        .streams()
        .best(ff::media::Type::Video)
        .ok_or("not an image: no picture in it")?;
    let index = stream.index();
    let mut dec = ff::codec::context::Context::from_parameters(stream.parameters())
        .and_then(|c| c.decoder().video())
        .map_err(|e| format!("cannot decode the image: {e}"))?;
    let mut frame = ff::frame::Video::empty();
    let mut got = false;
    for (s, packet) in input.packets() {
        if s.index() != index {
            continue;
        }
        if dec.send_packet(&packet).is_ok() && dec.receive_frame(&mut frame).is_ok() {
            got = true;
            break;
        }
    }
    if !got {
        let _ = dec.send_eof();
        got = dec.receive_frame(&mut frame).is_ok();
    }
    if !got {
        return Err("cannot decode the image".into());
    }
    let (w, h) = (frame.width(), frame.height());
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(format!("image is {w}x{h}; at most {MAX_SIDE}x{MAX_SIDE}"));
    }
    let mut yuva = ff::frame::Video::empty();
    ff::software::scaling::Context::get(
        frame.format(),
        w,
        h,
        Pixel::YUVA420P,
        w,
        h,
        ff::software::scaling::Flags::BILINEAR,
    )
    .and_then(|mut s| s.run(&frame, &mut yuva))
    .map_err(|e| format!("cannot convert the image: {e}"))?;
    let plane = |i: usize, pw: u32, ph: u32| -> Vec<u8> {
        let (data, stride) = (yuva.data(i), yuva.stride(i));
        (0..ph as usize)
            .flat_map(|row| {
                data[row * stride..row * stride + pw as usize]
                    .iter()
                    .copied()
            })
            .collect()
    };
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let a = if has_alpha(frame.format()) {
        plane(3, w, h)
    } else {
        vec![255; (w * h) as usize]
    };
    Ok(Image {
        width: w,
        height: h,
        y: plane(0, w, h),
        u: plane(1, cw, ch),
        v: plane(2, cw, ch),
        a,
    })
}

fn has_alpha(p: Pixel) -> bool {
    matches!(
        p,
        Pixel::RGBA
            | Pixel::BGRA
            | Pixel::ARGB
            | Pixel::ABGR
            | Pixel::YUVA420P
            | Pixel::YA8
            | Pixel::RGBA64BE
            | Pixel::RGBA64LE
            | Pixel::PAL8
    )
}

/// Where the image's top-left corner goes in a `w`×`h` picture: one of the
/// nine positions, `margin` pixels in from the edges it touches, on even
/// coordinates (so chroma lines up).
pub fn place(img: &Image, pos: WatermarkPosition, w: u32, h: u32, margin: u32) -> (u32, u32) {
    use WatermarkPosition::*;
    let free_x = w.saturating_sub(img.width);
    let free_y = h.saturating_sub(img.height);
    let x = match pos {
        TopLeft | CenterLeft | BottomLeft => margin.min(free_x),
        TopCenter | Center | BottomCenter => free_x / 2,
        TopRight | CenterRight | BottomRight => free_x.saturating_sub(margin),
    };
    let y = match pos {
        TopLeft | TopCenter | TopRight => margin.min(free_y),
        CenterLeft | Center | CenterRight => free_y / 2,
        BottomLeft | BottomCenter | BottomRight => free_y.saturating_sub(margin),
    };
    (x & !1, y & !1)
}

/// The margin for a `w`×`h` picture: 3 % of its shorter side.
pub fn margin(w: u32, h: u32) -> u32 {
    w.min(h) * 3 / 100
}

/// Blends `img` into the YUV420P `frame` with its top-left corner at `(x, y)`.
pub fn blend(img: &Image, frame: &mut ff::frame::Video, (x, y): (u32, u32)) {
    let (fw, fh) = (frame.width(), frame.height());
    let w = img.width.min(fw.saturating_sub(x));
    let h = img.height.min(fh.saturating_sub(y));
    let mix = |dst: &mut u8, src: u8, a: u8| {
        let a = u32::from(a);
        *dst = ((u32::from(src) * a + u32::from(*dst) * (255 - a) + 127) / 255) as u8;
    };
    let stride = frame.stride(0);
    let luma = frame.data_mut(0);
    for row in 0..h as usize {
        for col in 0..w as usize {
            let i = row * img.width as usize + col;
            let d = (y as usize + row) * stride + x as usize + col;
            mix(&mut luma[d], img.y[i], img.a[i]);
        }
    }
    let cw_img = img.width.div_ceil(2) as usize;
    for plane in [1usize, 2] {
        let src = if plane == 1 { &img.u } else { &img.v };
        let stride = frame.stride(plane);
        let chroma = frame.data_mut(plane);
        for row in 0..h.div_ceil(2) as usize {
            for col in 0..w.div_ceil(2) as usize {
                // The alpha of the 2×2 block's top-left pixel.
                let a = img.a[(row * 2) * img.width as usize + col * 2];
                let d = (y as usize / 2 + row) * stride + x as usize / 2 + col;
                mix(&mut chroma[d], src[row * cw_img + col], a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: u32, h: u32) -> Image {
        Image {
            width: w,
            height: h,
            y: vec![200; (w * h) as usize],
            u: vec![50; (w.div_ceil(2) * h.div_ceil(2)) as usize],
            v: vec![240; (w.div_ceil(2) * h.div_ceil(2)) as usize],
            a: vec![255; (w * h) as usize],
        }
    }

    #[test]
    fn nine_positions_with_a_margin_on_even_coordinates() {
        use WatermarkPosition::*;
        let i = img(64, 32);
        let (w, h, m) = (1280, 720, margin(1280, 720));
        assert_eq!(m, 21);
        assert_eq!(place(&i, TopLeft, w, h, m), (20, 20));
        assert_eq!(place(&i, TopRight, w, h, m), (1194, 20));
        assert_eq!(place(&i, Center, w, h, m), (608, 344));
        assert_eq!(place(&i, BottomCenter, w, h, m), (608, 666));
        assert_eq!(place(&i, BottomRight, w, h, m), (1194, 666));
        // An image bigger than the picture sits at the origin, clipped.
        assert_eq!(place(&img(2000, 900), BottomRight, w, h, m), (0, 0));
    }

    #[test]
    fn blending_honours_alpha_and_stays_inside_the_picture() {
        let mut frame = ff::frame::Video::new(Pixel::YUV420P, 16, 16);
        for p in 0..3 {
            frame.data_mut(p).fill(16);
        }
        let mut i = img(8, 8);
        // Left half opaque, right half transparent.
        for row in 0..8 {
            for col in 4..8 {
                i.a[row * 8 + col] = 0;
            }
        }
        blend(&i, &mut frame, (12, 12)); // clipped to 4×4
        let s = frame.stride(0);
        assert_eq!(frame.data(0)[12 * s + 12], 200, "opaque: the image");
        assert_eq!(frame.data(0)[11 * s + 11], 16, "outside: untouched");
        blend(&i, &mut frame, (0, 0));
        assert_eq!(frame.data(0)[2], 200);
        assert_eq!(frame.data(0)[6], 16, "transparent: the picture");
        assert_eq!(frame.data(1)[1], 50);
        assert_eq!(frame.data(2)[1], 240);
    }
}
