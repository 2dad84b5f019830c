//! `kura-sim`: how hard it is to capture a group under node age, simulated with the network's
//! own rules (`kura_node::age`: when a vault is relocated, where it must land, who is an
//! elder, the quorum a committee certifies with), for 10,000 vaults and more, over months.
//!
//! Each epoch (an hour by default) every vault meets one churn event of its group: a random
//! 32-byte hash, as the hash of its elders' signatures is to anyone short of a quorum of them.
//! [`relocates`] says whether it moves; if so it is one step older, and must make a new key in the range of [`destination`] ([`range_bits`] bits on a network of
//! this size), which costs `2^bits` keys of id work. Honest vaults come and go as the public
//! IPFS DHT's servers do (half of newcomers gone within two hours; the rest live for months);
//! attackers hold a share of all vaults from the start and never leave unless their strategy
//! says so:
//! - `wait`: join anywhere, age honestly, vote against the network once elders;
//! - `grind`: grind each id next to a chosen address before joining (relocation moves it);
//! - `rejoin`: after each relocation that does not land next to the chosen address, leave
//!   and rejoin there as a newcomer (age lost), until placed well.
//!
//! Every day it samples every committee (the `group` elders closest to each elder, and to
//! the chosen address) and reports how often the attacker held a quorum of some group and of
//! the chosen one, the attacker's share of elders, and the attacker's cost in core-hours of
//! id work. With `--png` it plots those over the simulated months.

use std::path::PathBuf;

use clap::Parser;
use kura_node::age::{destination, in_range, quorum, range_bits, relocates, ELDER_AGE};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Command-line options.
#[derive(Parser, Debug)]
#[command(name = "kura-sim", about = "Simulate node age, relocation and group capture")]
struct Args {
    /// Vaults at the start (all elders by the network's genesis) and, on average, after.
    #[arg(long, default_value_t = 10_000)]
    vaults: usize,
    /// Simulated days.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Hours between a vault's churn events.
    #[arg(long, default_value_t = 1.0)]
    epoch_hours: f64,
    /// Attackers' shares of all vaults, in percent.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1.0, 5.0, 10.0, 20.0, 30.0])]
    attackers: Vec<f64>,
    /// Voting group sizes to compare.
    #[arg(long, value_delimiter = ',', default_values_t = vec![8usize, 16, 24])]
    groups: Vec<usize>,
    /// Attacker strategies: wait, grind, rejoin.
    #[arg(long, value_delimiter = ',', default_values_t = vec!["wait".to_string(), "grind".to_string(), "rejoin".to_string()])]
    strategies: Vec<String>,
    /// Bits of id work (16 in production: about a second of one core per id).
    #[arg(long, default_value_t = 16)]
    id_difficulty: u32,
    /// Keys one core makes per second.
    #[arg(long, default_value_t = 65_536.0)]
    keys_per_sec: f64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write a CSV of the daily samples here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Plot the daily samples to this PNG.
    #[arg(long)]
    png: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Strategy {
    Wait,
    Grind,
    Rejoin,
}

#[derive(Clone, Debug)]
struct Vault {
    /// The top 64 bits of its position in key space (enough to order 10⁶ vaults by XOR).
    pos: u64,
    age: u8,
    attacker: bool,
    /// Epoch at which it leaves (never, for attackers).
    leaves: u64,
}

/// One day's sample.
#[derive(Clone, Debug, Default)]
struct Sample {
    day: u32,
    elders: usize,
    attacker_elders: usize,
    /// Committees looked at, and those with an attacker quorum.
    groups: usize,
    captured: usize,
    /// Whether the chosen address's committee had an attacker quorum.
    chosen: bool,
    /// Attacker elders in the chosen committee.
    chosen_attackers: usize,
    /// Probability that some committee is captured, from the attacker's share of elders
    /// (binomial tail per committee, over the network's disjoint committees).
    any_analytic: f64,
}

struct Run {
    samples: Vec<Sample>,
    /// Core-hours of id work the attacker spent.
    core_hours: f64,
    /// First day the attacker held a quorum of the chosen committee.
    first_chosen: Option<u32>,
}

fn top64(bytes: &[u8; 32]) -> u64 {
    u64::from_be_bytes(bytes[..8].try_into().unwrap_or([0; 8]))
}

fn random_position(rng: &mut StdRng) -> [u8; 32] {
    rng.gen()
}

/// A position in the range of `dest` at `bits`: what a vault's new key grinds for.
fn position_in_range(rng: &mut StdRng, dest: &[u8; 32], bits: u32) -> [u8; 32] {
    loop {
        let mut p: [u8; 32] = rng.gen();
        let keep = (bits as usize).min(256);
        for i in 0..keep / 8 {
            p[i] = dest[i];
        }
        if keep % 8 != 0 {
            let mask = 0xffu8 << (8 - keep % 8);
            p[keep / 8] = (dest[keep / 8] & mask) | (p[keep / 8] & !mask);
        }
        if in_range(&p, dest, bits) {
            return p;
        }
    }
}

/// The `k` of `sorted` closest to `target` by XOR.
fn closest(sorted: &[(u64, bool)], target: u64, k: usize) -> Vec<(u64, bool)> {
    if sorted.len() <= k {
        return sorted.to_vec();
    }
    let mut shift = 0u32;
    let (lo, hi) = loop {
        let (base, end) = if shift >= 64 { (0u64, u64::MAX) } else { let b = (target >> shift) << shift; (b, b | ((1u64 << shift) - 1)) };
        let lo = sorted.partition_point(|(p, _)| *p < base);
        let hi = sorted.partition_point(|(p, _)| *p <= end);
        if hi - lo >= k || shift >= 64 {
            break (lo, hi);
        }
        shift += 1;
    };
    let mut block: Vec<(u64, bool)> = sorted[lo..hi].to_vec();
    block.sort_by_key(|(p, _)| p ^ target);
    block.truncate(k);
    block
}

/// P(X ≥ q) for X ~ Binomial(n, p).
fn binomial_tail(n: usize, q: usize, p: f64) -> f64 {
    let mut total = 0.0;
    for x in q..=n {
        let mut c = 1.0f64;
        for i in 0..x {
            c = c * (n - i) as f64 / (i + 1) as f64;
        }
        total += c * p.powi(x as i32) * (1.0 - p).powi((n - x) as i32);
    }
    total.min(1.0)
}

struct Sim<'a> {
    args: &'a Args,
    rng: StdRng,
    vaults: Vec<Vault>,
    epoch: u64,
    strategy: Strategy,
    group: usize,
    target: [u8; 32],
    keys: f64,
}

impl<'a> Sim<'a> {
    fn new(args: &'a Args, share: f64, strategy: Strategy, group: usize, seed: u64) -> Sim<'a> {
        let mut rng = StdRng::seed_from_u64(seed);
        let target = random_position(&mut rng);
        let mut sim = Sim { args, rng, vaults: Vec::new(), epoch: 0, strategy, group, target, keys: 0.0 };
        // The network's founders: elders by its genesis, with stable lifetimes.
        for _ in 0..args.vaults {
            let pos = top64(&random_position(&mut sim.rng));
            let leaves = sim.stable_life();
            sim.vaults.push(Vault { pos, age: ELDER_AGE, attacker: false, leaves });
        }
        let attackers = (share / 100.0 / (1.0 - share / 100.0) * args.vaults as f64).round() as usize;
        for _ in 0..attackers {
            let pos = sim.join_position(true);
            sim.vaults.push(Vault { pos, age: 0, attacker: true, leaves: u64::MAX });
        }
        sim
    }

    fn epochs_per_day(&self) -> u64 {
        (24.0 / self.args.epoch_hours).round().max(1.0) as u64
    }

    /// A stable vault's departure epoch: months on average.
    fn stable_life(&mut self) -> u64 {
        let mean_hours = 180.0 * 24.0;
        self.epoch + (self.exp(mean_hours) / self.args.epoch_hours).ceil() as u64
    }

    /// A newcomer's departure epoch: half of newcomers leave within two hours (the public
    /// IPFS DHT's servers); the rest are stable.
    fn newcomer_life(&mut self) -> u64 {
        if self.rng.gen_bool(0.5) {
            // A median of two hours.
            let mean_hours = 2.0 / std::f64::consts::LN_2;
            self.epoch + (self.exp(mean_hours) / self.args.epoch_hours).ceil() as u64
        } else {
            self.stable_life()
        }
    }

    fn exp(&mut self, mean: f64) -> f64 {
        let u: f64 = self.rng.gen_range(f64::MIN_POSITIVE..1.0);
        -mean * u.ln()
    }

    fn bits(&self) -> u32 {
        range_bits(self.vaults.len())
    }

    /// Where a joining vault sits: anywhere, or (an attacker that grinds or rejoins) next to
    /// the chosen address, for `2^bits` keys of work.
    fn join_position(&mut self, attacker: bool) -> u64 {
        let bits = self.bits();
        let aimed = attacker && self.strategy != Strategy::Wait;
        let work = 2f64.powi(self.args.id_difficulty as i32);
        if aimed {
            self.keys += work * 2f64.powi(bits as i32 + 3);
            let target = self.target;
            top64(&position_in_range(&mut self.rng, &target, bits + 3))
        } else {
            if attacker {
                self.keys += work;
            }
            top64(&random_position(&mut self.rng))
        }
    }

    fn step(&mut self) {
        self.epoch += 1;
        let bits = self.bits();
        let work = 2f64.powi(self.args.id_difficulty as i32) * 2f64.powi(bits as i32);
        let target = self.target;
        let mut i = 0;
        while i < self.vaults.len() {
            if self.vaults[i].leaves <= self.epoch {
                self.vaults.swap_remove(i);
                continue;
            }
            let event: [u8; 32] = self.rng.gen();
            let v = &self.vaults[i];
            if relocates(&event, v.age) {
                let dest = destination(&event);
                let pos = position_in_range(&mut self.rng, &dest, bits);
                let attacker = v.attacker;
                if attacker {
                    self.keys += work;
                }
                let placed_well = in_range(&pos, &target, bits);
                let v = &mut self.vaults[i];
                if attacker && self.strategy == Strategy::Rejoin && !placed_well {
                    // Leave, and come back as a newcomer next to the chosen address.
                    v.age = 0;
                    let _ = v;
                    let p = self.join_position(true);
                    self.vaults[i].pos = p;
                } else {
                    v.pos = top64(&pos);
                    v.age = v.age.saturating_add(1);
                }
            }
            i += 1;
        }
        // Honest newcomers keep the network at about its size.
        let honest = self.vaults.iter().filter(|v| !v.attacker).count();
        let arrivals = self.args.vaults.saturating_sub(honest);
        for _ in 0..arrivals {
            let pos = self.join_position(false);
            let leaves = self.newcomer_life();
            self.vaults.push(Vault { pos, age: 0, attacker: false, leaves });
        }
    }

    fn sample(&self, day: u32) -> Sample {
        let mut elders: Vec<(u64, bool)> = self.vaults.iter().filter(|v| v.age >= ELDER_AGE).map(|v| (v.pos, v.attacker)).collect();
        elders.sort_unstable();
        let q = quorum(self.group);
        let attacker_elders = elders.iter().filter(|e| e.1).count();
        let mut captured = 0;
        for &(p, _) in &elders {
            let c = closest(&elders, p, self.group);
            if c.iter().filter(|e| e.1).count() >= q {
                captured += 1;
            }
        }
        let chosen = closest(&elders, top64(&self.target), self.group);
        let chosen_attackers = chosen.iter().filter(|e| e.1).count();
        let share = attacker_elders as f64 / elders.len().max(1) as f64;
        let per_group = binomial_tail(self.group, q, share);
        let disjoint = (elders.len() / self.group).max(1) as f64;
        let any_analytic = 1.0 - (1.0 - per_group).powf(disjoint);
        Sample {
            day,
            elders: elders.len(),
            attacker_elders,
            groups: elders.len(),
            captured,
            chosen: chosen_attackers >= q,
            chosen_attackers,
            any_analytic,
        }
    }

    fn run(mut self) -> Run {
        let mut samples = Vec::new();
        let mut first_chosen = None;
        let per_day = self.epochs_per_day();
        for day in 1..=self.args.days {
            for _ in 0..per_day {
                self.step();
            }
            let s = self.sample(day);
            if s.chosen && first_chosen.is_none() {
                first_chosen = Some(day);
            }
            samples.push(s);
        }
        let core_hours = self.keys / self.args.keys_per_sec / 3600.0;
        Run { samples, core_hours, first_chosen }
    }
}

fn strategy(name: &str) -> anyhow::Result<Strategy> {
    match name {
        "wait" => Ok(Strategy::Wait),
        "grind" => Ok(Strategy::Grind),
        "rejoin" => Ok(Strategy::Rejoin),
        other => anyhow::bail!("unknown strategy {other:?}: wait, grind or rejoin"),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let strategies: Vec<Strategy> = args.strategies.iter().map(|s| strategy(s)).collect::<anyhow::Result<_>>()?;
    println!(
        "kura-sim: {} vaults, {} days, a churn event per vault every {} h, id work {} bits, ELDER_AGE {}",
        args.vaults, args.days, args.epoch_hours, args.id_difficulty, ELDER_AGE
    );
    println!(
        "{:>5} {:>8} {:>7} {:>9} {:>11} {:>12} {:>12} {:>10} {:>12}",
        "group", "strategy", "attack%", "elders", "attack-eld%", "any(sampled)", "any(binom)", "chosen", "core-hours"
    );
    let mut csv = String::from("group,strategy,attack_pct,day,elders,attacker_elders,captured_groups,groups,chosen,chosen_attackers,any_analytic\n");
    let mut curves: Vec<(usize, String, Vec<(u32, f64)>)> = Vec::new();
    for &group in &args.groups {
        for &strat in &strategies {
            for (n, &share) in args.attackers.iter().enumerate() {
                let seed = args.seed ^ ((group as u64) << 32) ^ ((n as u64) << 16) ^ strat as u64;
                let run = Sim::new(&args, share, strat, group, seed).run();
                let last = run.samples.last().cloned().unwrap_or_default();
                let sampled = run.samples.iter().filter(|s| s.captured > 0).count() as f64 / run.samples.len().max(1) as f64;
                let analytic = run.samples.iter().map(|s| s.any_analytic).fold(0.0f64, f64::max);
                let chosen_days = run.samples.iter().filter(|s| s.chosen).count();
                println!(
                    "{:>5} {:>8} {:>7.0} {:>9} {:>10.1}% {:>12.4} {:>12.2e} {:>10} {:>12.1}",
                    group,
                    format!("{strat:?}").to_lowercase(),
                    share,
                    last.elders,
                    100.0 * last.attacker_elders as f64 / last.elders.max(1) as f64,
                    sampled,
                    analytic,
                    match run.first_chosen {
                        Some(d) => format!("day {d} ({chosen_days} d)"),
                        None => "never".into(),
                    },
                    run.core_hours
                );
                for s in &run.samples {
                    csv.push_str(&format!(
                        "{group},{strat:?},{share},{},{},{},{},{},{},{},{:e}\n",
                        s.day, s.elders, s.attacker_elders, s.captured, s.groups, s.chosen, s.chosen_attackers, s.any_analytic
                    ));
                }
                if strat == Strategy::Wait {
                    curves.push((group, format!("{share}% attackers"), run.samples.iter().map(|s| (s.day, s.any_analytic)).collect()));
                }
            }
        }
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, csv)?;
        println!("daily samples: {}", path.display());
    }
    if let Some(path) = &args.png {
        // One plot per group size, one curve per attacker share.
        for &group in &args.groups {
            let mine: Vec<(String, Vec<(u32, f64)>)> =
                curves.iter().filter(|(g, _, _)| *g == group).map(|(_, name, c)| (name.clone(), c.clone())).collect();
            if mine.is_empty() {
                continue;
            }
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "sim".into());
            let file = path.with_file_name(format!("{stem}-group{group}.png"));
            kura_benches_plot::plot(&file, &mine)?;
            println!("plot: {} (log10 of P(some committee of {group} captured) by day, strategy wait):", file.display());
            for (n, (name, _)) in mine.iter().enumerate() {
                let [r, g, b] = kura_benches_plot::COLOURS[n % kura_benches_plot::COLOURS.len()];
                println!("  #{r:02x}{g:02x}{b:02x}  {name}");
            }
        }
    }
    Ok(())
}

mod kura_benches_plot {
    //! The plot: log₁₀ of the probability that some committee is captured (y, from 10⁻¹⁲ to
    //! 1, a grid line per decade, labelled), by day (x, a grid line every 30 days, labelled in
    //! days). One colour per curve, in the order the legend printed by `kura-sim` gives.

    const W: usize = 960;
    const H: usize = 540;
    const LEFT: usize = 60;
    const BOTTOM: usize = 40;
    const TOP: usize = 20;
    const RIGHT: usize = 20;
    const FLOOR: f64 = -12.0;

    /// Colours, one per curve, in order.
    pub const COLOURS: [[u8; 3]; 10] = [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
        [188, 189, 34],
        [23, 190, 207],
    ];

    /// 3×5 digits and a minus sign, one row of three bits each.
    const GLYPHS: [(char, [u8; 5]); 11] = [
        ('0', [7, 5, 5, 5, 7]),
        ('1', [2, 6, 2, 2, 7]),
        ('2', [7, 1, 7, 4, 7]),
        ('3', [7, 1, 7, 1, 7]),
        ('4', [5, 5, 7, 1, 1]),
        ('5', [7, 4, 7, 1, 7]),
        ('6', [7, 4, 7, 5, 7]),
        ('7', [7, 1, 1, 1, 1]),
        ('8', [7, 5, 7, 5, 7]),
        ('9', [7, 5, 7, 1, 7]),
        ('-', [0, 0, 7, 0, 0]),
    ];

    struct Canvas(Vec<u8>);

    impl Canvas {
        fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
            if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
                let i = (y as usize * W + x as usize) * 3;
                self.0[i..i + 3].copy_from_slice(&c);
            }
        }

        fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
            let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
            for s in 0..=steps {
                let x = x0 + (x1 - x0) * s / steps;
                let y = y0 + (y1 - y0) * s / steps;
                self.set(x, y, c);
                self.set(x, y + 1, c);
            }
        }

        fn text(&mut self, x: i64, y: i64, text: &str, c: [u8; 3]) {
            for (n, ch) in text.chars().enumerate() {
                let Some((_, rows)) = GLYPHS.iter().find(|(g, _)| *g == ch) else { continue };
                for (r, bits) in rows.iter().enumerate() {
                    for b in 0..3 {
                        if bits & (4 >> b) != 0 {
                            for dx in 0..2 {
                                for dy in 0..2 {
                                    self.set(x + n as i64 * 8 + b * 2 + dx, y + r as i64 * 2 + dy, c);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Draws `curves` (day, probability) to a PNG at `path`.
    pub fn plot(path: &std::path::Path, curves: &[(String, Vec<(u32, f64)>)]) -> anyhow::Result<()> {
        let mut canvas = Canvas(vec![255; W * H * 3]);
        let days = curves.iter().flat_map(|(_, c)| c.iter().map(|(d, _)| *d)).max().unwrap_or(1).max(1);
        let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
        let at = |day: f64, p: f64| -> (i64, i64) {
            let y = p.max(1e-300).log10().clamp(FLOOR, 0.0);
            ((LEFT as f64 + day / f64::from(days) * pw) as i64, (TOP as f64 + (-y / -FLOOR) * ph) as i64)
        };
        let grey = [220, 220, 220];
        for decade in 0..=(-FLOOR as i64) {
            let (_, y) = at(0.0, 10f64.powi(-decade as i32));
            canvas.line((LEFT as i64, y), ((W - RIGHT) as i64, y), grey);
            canvas.text(8, y - 5, &format!("{}", -decade), [0, 0, 0]);
        }
        let mut day = 0;
        while day <= days {
            let (x, _) = at(f64::from(day), 1.0);
            canvas.line((x, TOP as i64), (x, (H - BOTTOM) as i64), grey);
            canvas.text(x - 8, (H - BOTTOM + 10) as i64, &day.to_string(), [0, 0, 0]);
            day += 30;
        }
        let black = [0, 0, 0];
        canvas.line((LEFT as i64, TOP as i64), (LEFT as i64, (H - BOTTOM) as i64), black);
        canvas.line((LEFT as i64, (H - BOTTOM) as i64), ((W - RIGHT) as i64, (H - BOTTOM) as i64), black);
        for (n, (_, points)) in curves.iter().enumerate() {
            let colour = COLOURS[n % COLOURS.len()];
            for w in points.windows(2) {
                canvas.line(at(f64::from(w[0].0), w[0].1), at(f64::from(w[1].0), w[1].1), colour);
            }
        }
        let file = std::fs::File::create(path)?;
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), W as u32, H as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.write_header()?.write_image_data(&canvas.0)?;
        Ok(())
    }
}
