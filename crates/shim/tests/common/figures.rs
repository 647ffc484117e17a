//! Summaries of timings for the benchmarks' printed figures.

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Prints median, p10 and p90 of `ms`; returns the median.
pub fn summary(name: &str, mut ms: Vec<f64>) -> f64 {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = percentile(&ms, 0.5);
    println!(
        "  {name:<36} median {median:7.1} ms   p10 {:7.1}   p90 {:7.1}   (n={})",
        percentile(&ms, 0.1),
        percentile(&ms, 0.9),
        ms.len()
    );
    median
}

/// Writes `target/bench/NAME.json` for `benches/plot.py`: grouped bars, one
/// group per metric, one bar per series (`[(label, [(metric, value)])]`).
pub fn write_bars(name: &str, title: &str, unit: &str, series: &[(&str, Vec<(&str, f64)>)]) {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("bench");
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let metrics: Vec<String> = series
        .first()
        .map(|(_, m)| m.iter().map(|(k, _)| q(k)).collect())
        .unwrap_or_default();
    let series: Vec<String> = series
        .iter()
        .map(|(label, values)| {
            let values: Vec<String> = values
                .iter()
                .map(|(k, v)| format!("{}: {v:.3}", q(k)))
                .collect();
            format!("{}: {{{}}}", q(label), values.join(", "))
        })
        .collect();
    let json = format!(
        "{{\"kind\": \"bars\", \"title\": {}, \"unit\": {}, \"metrics\": [{}], \"series\": {{{}}}}}\n",
        q(title),
        q(unit),
        metrics.join(", "),
        series.join(", ")
    );
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{name}.json"));
    match std::fs::write(&path, json) {
        Ok(()) => println!("figures written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
