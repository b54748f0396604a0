//! The PNG plots of the page (plotters, a system TrueType font).

use std::path::Path;

use plotters::prelude::*;

use super::num;
use crate::Res;
use crate::servers::Kind;

pub(super) fn register_font() -> bool {
    let candidates = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ];
    for path in candidates {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    eprintln!("no TrueType font found: plots skipped");
    false
}

fn color(kind: Kind) -> RGBColor {
    match kind {
        Kind::Tidings => RGBColor(0xd6, 0x27, 0x28),
        Kind::Socketioxide => RGBColor(0x1f, 0x77, 0xb4),
        Kind::SocketIo => RGBColor(0x2c, 0xa0, 0x2c),
        Kind::RawNaive => RGBColor(0x7f, 0x7f, 0x7f),
        Kind::RawBatch => RGBColor(0x00, 0x00, 0x00),
        Kind::BareWs => RGBColor(0x94, 0x67, 0xbd),
        Kind::TidingsOneUser => RGBColor(0xff, 0x7f, 0x0e),
        Kind::TidingsEphemeral => RGBColor(0xe3, 0x77, 0xc2),
        Kind::TidingsPostgres => RGBColor(0x8c, 0x56, 0x4b),
    }
}

pub(super) fn plot(
    file: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(Kind, Vec<(f64, f64)>)],
    log_y: bool,
) -> Res<()> {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let x_max = points.clone().map(|p| p.0).fold(0.0f64, f64::max).max(1.0) * 1.05;
    let y_max = points.clone().map(|p| p.1).fold(0.0f64, f64::max).max(0.1) * 1.2;
    let y_min = points
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .clamp(0.01, 1.0);
    let root = BitMapBackend::new(file, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let draw = |chart_result: Result<(), String>| chart_result;
    if log_y {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|x| num(*x, 0))
            .draw()
            .map_err(|e| e.to_string())?;
        for (kind, pts) in series {
            let c = color(*kind);
            draw(
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                    .map(|s| {
                        s.label(kind.label())
                            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
                    })
                    .map_err(|e| e.to_string()),
            )?;
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| e.to_string())?;
    } else {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|x| num(*x, 0))
            .draw()
            .map_err(|e| e.to_string())?;
        for (kind, pts) in series {
            let c = color(*kind);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(kind.label())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
