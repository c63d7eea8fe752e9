//! [`Report::write_svg`]: the speedups as a bar chart, with the rounds' spread.

use super::Report;
use plotters::prelude::*;
use std::io;
use std::path::Path;

fn other<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

impl Report {
    /// Writes an SVG bar chart to `path`: per workload, one bar per variant with its
    /// speedup in the headline state and a whisker from its slowest to its fastest
    /// round. Needs the `svg` feature.
    ///
    /// ```no_run
    /// # let cmp = fanout::compare::Compare::builder().build()?;
    /// let report = cmp.report("my workloads");
    /// report.write_svg("speedups.svg")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_svg(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let groups = self.tables.len().max(1);
        let most = self.tables.iter().map(|t| t.rows.len()).max().unwrap_or(1).max(1);
        let legend_width = 190;
        let width = (legend_width + 80 + groups * (most * 22 + 30)).clamp(640, 2400) as u32;
        let bars: Vec<Vec<(String, f64, f64, f64)>> = self
            .tables
            .iter()
            .map(|t| {
                let head = t.states[0];
                let base = t.rows.first().and_then(|r| r.cell(head)).map_or(f64::NAN, |c| c.median_ns);
                t.rows
                    .iter()
                    .filter(|r| r.wrong.is_none())
                    .filter_map(|r| {
                        r.cell(head).map(|c| (r.variant.clone(), c.speedup, base / c.max_ns, base / c.min_ns))
                    })
                    .collect()
            })
            .collect();
        // A log scale: a table holds 0.02x and 15x rows alike.
        let finite = || bars.iter().flatten().flat_map(|b| [b.1, b.2, b.3]).filter(|v| v.is_finite() && *v > 0.0);
        let top = finite().fold(1.0f64, f64::max) * 1.3;
        let bottom = finite().fold(1.0f64, f64::min) / 1.3;
        let mut names: Vec<String> = Vec::new();
        for b in bars.iter().flatten() {
            if !names.contains(&b.0) {
                names.push(b.0.clone());
            }
        }
        let root = SVGBackend::new(path.as_ref(), (width, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(other)?;
        let headline = self.tables.first().map_or("", |t| t.states[0].name());
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{} ({headline}, {} threads)", self.title, self.threads), ("sans-serif", 18))
            .margin(12)
            .margin_right(legend_width as u32)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..groups as f64, (bottom..top).log_scale())
            .map_err(other)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_desc("speedup over the first row (log scale)")
            .draw()
            .map_err(other)?;
        let slot = 0.8 / most as f64;
        for (vi, name) in names.iter().enumerate() {
            let color = Palette99::pick(vi).to_rgba();
            let mut rects = Vec::new();
            let mut whiskers = Vec::new();
            for (g, table) in bars.iter().enumerate() {
                if let Some(k) = table.iter().position(|b| &b.0 == name) {
                    let (_, speedup, lo, hi) = table[k];
                    let x0 = g as f64 + 0.1 + k as f64 * slot;
                    rects.push(Rectangle::new([(x0, bottom), (x0 + slot * 0.9, speedup)], color.filled()));
                    let mid = x0 + slot * 0.45;
                    whiskers.push(PathElement::new(vec![(mid, lo), (mid, hi)], BLACK.stroke_width(1)));
                }
            }
            chart.draw_series(rects).map_err(other)?;
            chart.draw_series(whiskers).map_err(other)?;
            // The legend, outside the plot on the right.
            let (x, y) = (width as i32 - legend_width as i32 + 10, 40 + 16 * vi as i32);
            root.draw(&Rectangle::new([(x, y), (x + 10, y + 10)], color.filled())).map_err(other)?;
            root.draw(&Text::new(name.clone(), (x + 16, y), ("sans-serif", 13))).map_err(other)?;
        }
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(0.0, 1.0), (groups as f64, 1.0)], BLACK.mix(0.4))))
            .map_err(other)?;
        for (g, t) in self.tables.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(g as f64 + 0.5, bottom));
            root.draw(&Text::new(t.id.clone(), (x - 10, y + 12), ("sans-serif", 15))).map_err(other)?;
        }
        root.present().map_err(other)?;
        Ok(())
    }
}
