//! A routing decision with 10,000 rules loaded (the target is under 20 µs), against the
//! 33 sample rules as a baseline, over the sample city's units. Run with
//! `cargo bench -p minqing-routing --bench decide`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde::Deserialize;

use minqing_routing::{
    directory::Directory,
    domain::{CaseFacts, Channel, Level, Place, Urgency},
    import::{SAMPLE_UNITS, parse_toml},
    knowledge::{Item, Knowledge, PlaceInfo},
    rules::{Decider, RuleSet, SAMPLE},
    workdays::LocalTime,
};

#[derive(Deserialize)]
struct Places {
    city: City,
    place: Vec<P>,
}
#[derive(Deserialize)]
struct City {
    code: String,
}
#[derive(Deserialize)]
struct P {
    code: String,
    level: String,
    parent: String,
    name: String,
}
#[derive(Deserialize)]
struct Catalogue {
    item: Vec<I>,
}
#[derive(Deserialize)]
struct I {
    id: String,
    name: String,
    time_limit_working_days: u32,
    required_documents: Vec<String>,
    volunteer_suitable: bool,
}

/// The sample city and catalogue, read from intake's data files as intake serves them.
fn knowledge() -> Knowledge {
    let places: Places = toml::from_str(include_str!("../../intake/data/places.toml")).unwrap();
    let catalogue: Catalogue =
        toml::from_str(include_str!("../../intake/data/catalogue.toml")).unwrap();
    let mut k = Knowledge {
        city: places.city.code,
        ..Default::default()
    };
    for p in places.place {
        let level = match p.level.as_str() {
            "district" => Level::District,
            "street" => Level::Street,
            "community" => Level::Community,
            "grid" => Level::Grid,
            _ => Level::Building,
        };
        k.places.insert(
            p.code,
            PlaceInfo {
                level,
                parent: p.parent,
                name: p.name,
            },
        );
    }
    for i in catalogue.item {
        k.items.insert(
            i.id,
            Item {
                name: i.name,
                time_limit_working_days: i.time_limit_working_days,
                required_documents: i.required_documents,
                default_disposition: None,
                volunteer_suitable: i.volunteer_suitable,
            },
        );
    }
    k
}

/// 10,000 rules over every category, place level, channel and keyword mix; distinct
/// priorities, so none contradicts another.
fn many_rules(k: &Knowledge) -> String {
    let mut cats: Vec<&String> = k.items.keys().collect();
    cats.sort();
    let mut places: Vec<&String> = k.places.keys().collect();
    places.sort();
    let kinds = [
        "grid",
        "community",
        "street_office",
        "property_company",
        "police_station",
        "clinic",
    ];
    let channels = ["hotline", "app", "web", "service_hall", "grid_app"];
    let mut out = String::from("version = \"bench-10k\"\n");
    for i in 0..10_000usize {
        out.push_str(&format!(
            "[[rule]]\nid = \"r{i}\"\npriority = {}\ndisposition = \"committed\"\nunit_kind = \"{}\"\n",
            i % 5000,
            kinds[i % kinds.len()]
        ));
        if i % 10 != 0 {
            out.push_str(&format!("categories = [\"{}\"]\n", cats[i % cats.len()]));
        }
        if i % 3 != 0 {
            out.push_str(&format!(
                "places = [\"{}\"]\n",
                places[(i / 3) % places.len()]
            ));
        }
        if i % 4 == 0 {
            out.push_str(&format!(
                "channels = [\"{}\"]\n",
                channels[i % channels.len()]
            ));
        }
        if i % 7 == 0 {
            out.push_str("keywords = [\"路灯\", \"漏水\", \"noise\"]\n");
        }
        if i % 11 == 0 {
            out.push_str("time_of_day = \"08:00-18:00\"\n");
        }
    }
    out
}

fn facts(
    category: &str,
    building: &str,
    k: &Knowledge,
    urgency: Urgency,
    title: &str,
) -> CaseFacts {
    let place = k
        .complete(&Place {
            building: building.into(),
            ..Default::default()
        })
        .unwrap();
    CaseFacts {
        case_id: "0193".into(),
        category: category.into(),
        place,
        channel: Channel::Hotline,
        urgency,
        title: title.into(),
        description: "3号楼门口的路灯不亮了，晚上很黑，老人出门不方便".into(),
        submit_time: 1_795_000_000_000_000,
        volunteer_suitable: false,
        category_name: String::new(),
        liaison_station: String::new(),
        deputy: String::new(),
        cluster: String::new(),
        attachments: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let k = knowledge();
    let units = Directory::new(parse_toml(SAMPLE_UNITS).unwrap());
    let sample = RuleSet::parse(SAMPLE, "sample", 0, Some(&k)).unwrap();
    let text = many_rules(&k);
    let big = RuleSet::parse(&text, "bench", 0, None).unwrap();
    assert_eq!(big.rules.len(), 10_000);
    let cases = [
        (
            "streetlight",
            facts(
                "onsite-environment-02",
                "620102001001-g01-b01",
                &k,
                Urgency::Normal,
                "路灯不亮",
            ),
        ),
        (
            "emergency",
            facts(
                "onsite-environment-06",
                "620103002002-g03-b01",
                &k,
                Urgency::Emergency,
                "楼道着火",
            ),
        ),
        (
            "no-match",
            facts(
                "online-report-01",
                "620102002001-g02-b01",
                &k,
                Urgency::Low,
                "其他问题",
            ),
        ),
    ];
    for (set_name, set) in [("sample-33", &sample), ("rules-10k", &big)] {
        let decider = Decider {
            rules: set,
            units: &units,
            knowledge: &k,
            local: LocalTime::new(480),
            default_time_limit: 5,
        };
        let mut group = c.benchmark_group(format!("decide/{set_name}"));
        for (name, f) in &cases {
            group.bench_function(*name, |b| {
                b.iter(|| black_box(decider.decide(black_box(f), &[], 1_795_000_000_000_000)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
