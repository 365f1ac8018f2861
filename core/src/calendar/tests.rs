use super::*;
use serde_json::json;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn nrf() -> Spec {
    Spec::parse(
        &json!({"kind": "retail_454", "year_end": "nearest", "end_month": 1, "weekday": "sat"}),
    )
    .unwrap()
}

fn specs() -> Vec<Spec> {
    vec![
        nrf(),
        Spec::parse(&json!({"kind": "retail", "pattern": "4-4-5", "end_month": 12, "weekday": "sun", "year_end": "last", "week53": {"quarter": 2}, "year_label": "end"})).unwrap(),
        Spec::parse(&json!({"kind": "retail", "pattern": "5-4-4", "end_month": 6, "weekday": "fri"})).unwrap(),
        Spec::parse(&json!({"kind": "gregorian", "start_month": 4, "year_label": "end"})).unwrap(),
        Spec::parse(&json!({"kind": "gregorian", "start_month": 7, "year_label": "start"})).unwrap(),
        Spec::parse(&json!({"kind": "gregorian"})).unwrap(),
        Spec::IsoWeek,
    ]
}

#[test]
fn nrf_years_match_the_published_calendar() {
    // NRF 4-5-4: fiscal years named by the year they start in, ending on the Saturday nearest Jan 31
    for (fy, start, end, weeks) in [
        (2017, "2017-01-29", "2018-02-03", 53),
        (2018, "2018-02-04", "2019-02-02", 52),
        (2022, "2022-01-30", "2023-01-28", 52),
        (2023, "2023-01-29", "2024-02-03", 53),
        (2024, "2024-02-04", "2025-02-01", 52),
    ] {
        let y = period_of(&nrf(), Grain::Year, d(start)).unwrap();
        assert_eq!((y.year, y.start, y.end), (fy, d(start), d(end)), "FY{fy}");
        assert_eq!(((y.end - y.start).num_days() + 1) / 7, weeks, "FY{fy}");
    }
    // FY2023: 4-5-4 periods, the 53rd week in the last period
    let p = periods_between(&nrf(), Grain::Period, d("2023-01-29"), d("2024-02-03")).unwrap();
    assert_eq!(p.len(), 12);
    assert_eq!((p[0].start, p[0].end), (d("2023-01-29"), d("2023-02-25")));
    assert_eq!((p[1].start, p[1].end), (d("2023-02-26"), d("2023-04-01")));
    assert_eq!((p[11].start, p[11].end), (d("2023-12-31"), d("2024-02-03")));
    assert_eq!(
        period_of(&nrf(), Grain::Period, d("2024-03-15"))
            .unwrap()
            .label(),
        "FY2024-P02"
    );
    assert_eq!(
        period_of(&nrf(), Grain::Week, d("2024-03-05"))
            .unwrap()
            .label(),
        "FY2024-W05"
    );
}

#[test]
fn gregorian_fiscal_and_iso() {
    let april =
        Spec::parse(&json!({"kind": "gregorian", "start_month": 4, "year_label": "end"})).unwrap();
    assert_eq!(
        period_of(&april, Grain::Period, d("2024-03-15"))
            .unwrap()
            .label(),
        "FY2024-P12"
    );
    assert_eq!(
        period_of(&april, Grain::Quarter, d("2024-04-01"))
            .unwrap()
            .label(),
        "FY2025-Q1"
    );
    let q = period_of(&april, Grain::Quarter, d("2024-08-20")).unwrap();
    assert_eq!(
        (q.index, q.start, q.end),
        (2, d("2024-07-01"), d("2024-09-30"))
    );
    let iso = Spec::IsoWeek;
    assert_eq!(
        period_of(&iso, Grain::Week, d("2021-01-03"))
            .unwrap()
            .label(),
        "FY2020-W53"
    );
    assert_eq!(
        period_of(&iso, Grain::Week, d("2024-12-30"))
            .unwrap()
            .label(),
        "FY2025-W01"
    );
    assert!(matches!(
        period_of(&iso, Grain::Period, d("2024-12-30")),
        Err(CalendarError::UnsupportedGrain { .. })
    ));
}

#[test]
fn out_of_range_and_bad_specs_are_refused() {
    assert!(matches!(
        period_of(&nrf(), Grain::Day, d("1899-12-31")),
        Err(CalendarError::OutOfRange(_))
    ));
    assert!(matches!(
        period_of(&nrf(), Grain::Day, d("2201-01-01")),
        Err(CalendarError::OutOfRange(_))
    ));
    for bad in [
        json!({"kind": "lunar"}),
        json!({"kind": "gregorian", "start_month": 13}),
        json!({"kind": "retail", "pattern": "4-4-4"}),
        json!({"kind": "retail_454", "weekday": "caturday"}),
        json!({"kind": "retail_454", "week53": {"quarter": 5}}),
        json!([1]),
        json!({"kind": "gregorian", "year_label": 1}),
        json!({"kind": "retail_454", "year_label": true}),
        json!({"kind": "gregorian", "year_label": null}),
    ] {
        assert!(Spec::parse(&bad).is_err(), "{bad}");
    }
    assert!(periods_between(&nrf(), Grain::Week, d("2024-02-01"), d("2024-01-01")).is_err());
}

#[test]
fn every_date_belongs_to_exactly_one_period_and_periods_tile_the_years() {
    let grains = [
        Grain::Year,
        Grain::Quarter,
        Grain::Period,
        Grain::Week,
        Grain::Day,
    ];
    for spec in specs() {
        for grain in grains {
            if matches!(spec, Spec::IsoWeek) && matches!(grain, Grain::Quarter | Grain::Period) {
                continue;
            }
            let all = periods_between(&spec, grain, d("1995-01-01"), d("2034-12-31")).unwrap();
            for pair in all.windows(2) {
                assert_eq!(
                    pair[1].start,
                    pair[0].end + Duration::days(1),
                    "{spec:?} {grain}: gap or overlap after {}",
                    pair[0].label()
                );
                assert!(pair[0].start <= pair[0].end);
                if pair[1].year == pair[0].year {
                    assert_eq!(pair[1].index, pair[0].index + 1, "{spec:?} {grain}");
                } else {
                    assert_eq!(
                        pair[1].index, 1,
                        "{spec:?} {grain}: a year starts with its first {grain}"
                    );
                }
            }
            // every date lands in the period that lists it
            let mut day = d("1999-06-01");
            while day <= d("2001-06-01") {
                let p = period_of(&spec, grain, day).unwrap();
                assert!(p.start <= day && day <= p.end, "{spec:?} {grain} {day}");
                day += Duration::days(1);
            }
        }
    }
}

#[test]
fn retail_years_have_52_or_53_weeks_and_end_where_the_rule_says() {
    for spec in specs() {
        let Spec::Retail(r) = &spec else { continue };
        for y in 1990..2060 {
            let (_, start, end) =
                year_of(&spec, NaiveDate::from_ymd_opt(y, 7, 1).unwrap()).unwrap();
            let days = (end - start).num_days() + 1;
            assert!(days == 364 || days == 371, "{spec:?} {y}: {days} days");
            assert_eq!(end.weekday(), r.weekday);
            let periods = periods_between(&spec, Grain::Period, start, end).unwrap();
            let long: Vec<i64> = periods
                .iter()
                .map(|p| ((p.end - p.start).num_days() + 1) / 7)
                .collect();
            assert_eq!(
                long.iter().sum::<i64>() * 7,
                days,
                "{spec:?} {y}: periods tile the year"
            );
            if days == 371 {
                let home = match r.week53 {
                    Week53::LastPeriod => 11,
                    Week53::LastPeriodOfQuarter(q) => (q * 3 - 1) as usize,
                };
                assert_eq!(
                    long[home],
                    i64::from(r.pattern[home % 3]) + 1,
                    "{spec:?} {y}: the 53rd week's home"
                );
            }
        }
    }
}

#[test]
fn the_year_cache_answers_what_period_of_answers_in_any_order() {
    let grains = [
        Grain::Year,
        Grain::Quarter,
        Grain::Period,
        Grain::Week,
        Grain::Day,
    ];
    for spec in specs() {
        for grain in grains {
            let mut cache = super::YearCache::default();
            // dates in a scrambled order over 40 years, and the edges of the supported range
            let base = d("1990-01-01");
            let mut days: Vec<NaiveDate> = (0..14_610)
                .map(|i| base + Duration::days((i * 7919) % 14_610))
                .collect();
            days.extend([
                d("1900-01-01"),
                d("2200-12-31"),
                d("1899-12-31"),
                d("2201-01-01"),
            ]);
            for day in days {
                assert_eq!(
                    cache.period_of(&spec, grain, day),
                    period_of(&spec, grain, day),
                    "{spec:?} {grain} {day}"
                );
            }
        }
    }
}
