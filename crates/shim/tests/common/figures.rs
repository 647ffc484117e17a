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
