//! Plots for eval reports, rendered to PNG without a plotting stack: a few lines and dots on a
//! white canvas, labelled with a 5×7 bitmap font (the eval needs one chart, not a library).

use std::path::Path;

/// Canvas size.
const W: usize = 640;
const H: usize = 420;
const MARGIN_L: usize = 70;
const MARGIN_R: usize = 30;
const MARGIN_T: usize = 30;
const MARGIN_B: usize = 60;

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Self {
            px: vec![255; W * H * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&rgb);
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), rgb: [u8; 3]) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
        for s in 0..=steps {
            let x = x0 + (x1 - x0) * s / steps;
            let y = y0 + (y1 - y0) * s / steps;
            self.set(x, y, rgb);
            self.set(x, y + 1, rgb);
        }
    }

    fn dot(&mut self, (x, y): (i64, i64), r: i64, rgb: [u8; 3]) {
        for dy in -r..=r {
            for dx in -r..=r {
                if dx * dx + dy * dy <= r * r {
                    self.set(x + dx, y + dy, rgb);
                }
            }
        }
    }

    /// Text at (x, y) (top left), 2× scaled glyphs.
    fn text(&mut self, x: i64, y: i64, s: &str) {
        for (k, ch) in s.chars().enumerate() {
            let Some(rows) = glyph(ch) else { continue };
            for (r, bits) in rows.iter().enumerate() {
                for c in 0..5 {
                    if bits & (1 << (4 - c)) != 0 {
                        for (ox, oy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            self.set(
                                x + k as i64 * 12 + c * 2 + ox,
                                y + r as i64 * 2 + oy,
                                [0, 0, 0],
                            );
                        }
                    }
                }
            }
        }
    }
}

/// 5×7 glyphs of the characters the charts use.
fn glyph(c: char) -> Option<[u8; 7]> {
    Some(match c.to_ascii_uppercase() {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '=' => [0, 0, 31, 0, 31, 0, 0],
        '@' => [14, 17, 23, 21, 23, 16, 14],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [30, 17, 17, 17, 17, 17, 30],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'Y' => [17, 17, 10, 4, 4, 4, 4],
        ' ' => [0; 7],
        _ => return None,
    })
}

/// nDCG@10 (y) against diversity (x) over an MMR λ sweep: one labelled dot per λ, joined in
/// sweep order. `points` are (λ, nDCG@10, diversity).
pub fn diversity_sweep(points: &[(f32, f64, f64)], path: &Path) -> std::io::Result<()> {
    let mut c = Canvas::new();
    let (x0, x1) = (MARGIN_L as i64, (W - MARGIN_R) as i64);
    let (y0, y1) = ((H - MARGIN_B) as i64, MARGIN_T as i64);
    let range = |v: Vec<f64>| {
        let lo = v.iter().copied().fold(f64::MAX, f64::min);
        let hi = v.iter().copied().fold(f64::MIN, f64::max);
        let pad = ((hi - lo) * 0.15).max(1e-3);
        (lo - pad, hi + pad)
    };
    let (dlo, dhi) = range(points.iter().map(|p| p.2).collect());
    let (nlo, nhi) = range(points.iter().map(|p| p.1).collect());
    let at = |d: f64, n: f64| {
        (
            x0 + ((d - dlo) / (dhi - dlo) * (x1 - x0) as f64) as i64,
            y0 - ((n - nlo) / (nhi - nlo) * (y0 - y1) as f64) as i64,
        )
    };
    let grey = [120, 120, 120];
    c.line((x0, y0), (x1, y0), grey);
    c.line((x0, y0), (x0, y1), grey);
    for t in 0..=4 {
        let f = f64::from(t) / 4.0;
        let (d, n) = (dlo + f * (dhi - dlo), nlo + f * (nhi - nlo));
        let (tx, ty) = at(d, n);
        c.line((tx, y0), (tx, y0 + 5), grey);
        c.text(tx - 24, y0 + 10, &format!("{d:.3}"));
        c.line((x0 - 5, ty), (x0, ty), grey);
        c.text(2, ty - 7, &format!("{n:.3}"));
    }
    c.text(x0 + (x1 - x0) / 2 - 54, H as i64 - 24, "DIVERSITY");
    c.text(x0, 6, "NDCG@10 BY MMR LAMBDA");
    let blue = [31, 90, 200];
    for w in points.windows(2) {
        c.line(at(w[0].2, w[0].1), at(w[1].2, w[1].1), blue);
    }
    for &(lambda, n, d) in points {
        let p = at(d, n);
        c.dot(p, 5, [200, 40, 40]);
        c.text(p.0 + 8, p.1 - 18, &format!("L={lambda}"));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, W as u32, H as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
    writer
        .write_image_data(&c.px)
        .map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sweep_plot_is_a_png_of_the_canvas_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        super::diversity_sweep(&[(1.0, 0.12, 0.5), (0.5, 0.1, 0.6)], &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (640, 420));
    }
}
