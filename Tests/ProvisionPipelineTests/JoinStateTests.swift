import Testing
import ProvisionModel
@testable import ProvisionPipeline

private func key(_ text: String) -> JoinKey { JoinKey(text.utf8) }

@Suite struct TableVersionsTests {
    @Test func answersAsOfTheEventTime() {
        var table = TableVersions()
        table.insert(key: key("c"), time: 10, value: "v10", horizon: .min)
        table.insert(key: key("c"), time: 30, value: "v30", horizon: .min)
        table.insert(key: key("c"), time: 20, value: "v20", horizon: .min)
        table.insert(key: key("c"), time: 20, value: "v20b", horizon: .min)
        table.insert(key: key("c"), time: 40, value: nil, horizon: .min)
        #expect(table.value(of: key("c"), asOf: 9, horizon: .min) == nil)
        #expect(table.value(of: key("c"), asOf: 10, horizon: .min) == "v10")
        #expect(table.value(of: key("c"), asOf: 25, horizon: .min) == "v20b", "the later record of one time wins")
        #expect(table.value(of: key("c"), asOf: 39, horizon: .min) == "v30")
        #expect(table.value(of: key("c"), asOf: 40, horizon: .min) == nil, "deleted")
        #expect(table.value(of: key("other"), asOf: 40, horizon: .min) == nil)
    }

    /// Pruning at any horizon must not change any lookup at or after that horizon: checked
    /// against an unpruned list of every version, over random histories.
    @Test(arguments: [1, 2, 3, 4, 5] as [UInt64])
    func pruningNeverChangesAnOnTimeAnswer(seed: UInt64) {
        var state = seed
        func next(_ bound: Int64) -> Int64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int64((state >> 33) % UInt64(bound))
        }
        var table = TableVersions()
        var all: [(key: String, time: Int64, value: JSONValue?)] = []
        var horizon: Int64 = 0
        for step in 0..<3_000 {
            let name = "k\(next(50))"
            let time = horizon + next(400) - 50  // a few arrive behind the horizon
            let value: JSONValue? = next(10) == 0 ? nil : .integer(Int64(step))
            table.insert(key: key(name), time: time, value: value, horizon: horizon)
            all.append((name, time, value))
            horizon += next(3)
            for probe in 0..<5 {
                let lookupKey = "k\(next(50))", at = horizon + next(300) - Int64(probe)
                // The newest version at or before the time; on a tie, the last inserted.
                let candidates = all.indices.filter { all[$0].key == lookupKey && all[$0].time <= max(at, horizon) }
                let expected = candidates.max { (all[$0].time, $0) < (all[$1].time, $1) }.flatMap { all[$0].value }
                #expect(table.value(of: key(lookupKey), asOf: at, horizon: horizon) == expected)
            }
        }
        #expect(table.versionCount < all.count / 4, "old versions were kept")
    }
}

@Suite struct WindowedEventsTests {
    @Test func matchesWithinTheWindowAndExpires() {
        var events = WindowedEvents()
        events.insert(key: key("o1"), time: 100, value: "p100", floor: 0)
        events.insert(key: key("o1"), time: 50, value: "p50", floor: 0)
        events.insert(key: key("o2"), time: 60, value: "q60", floor: 0)
        let keptLate = events.insert(key: key("o1"), time: 5, value: "late", floor: 10)
        #expect(!keptLate, "older than every open window")
        #expect(events.matches(of: key("o1"), from: 40, through: 100) == ["p50", "p100"])
        #expect(events.matches(of: key("o1"), from: 60, through: 99) == [])
        events.expire(before: 70)
        #expect(events.matches(of: key("o1"), from: 0, through: 200) == ["p100"])
        #expect(events.matches(of: key("o2"), from: 0, through: 200) == [])
        #expect(events.count == 1)
    }
}

@Suite struct JoinKeyTests {
    @Test func keysCompareAsTheRecordKeysProduceWrites() {
        #expect(JoinKey(JSONValue.string("c-1")) == JoinKey("c-1".utf8))
        #expect(JoinKey(JSONValue.integer(42)) == JoinKey("42".utf8))
        #expect(JoinKey(JSONValue.decimal("42.0")) == JoinKey("42".utf8), "an integral number is the integer")
        #expect(JoinKey(JSONValue.null) == nil)
        #expect(JoinKey(nil as JSONValue?) == nil)
        // Inline up to 16 bytes, then the rest: every byte and the length count.
        let long = "customer-0000000000000001"
        #expect(JoinKey(long.utf8) == JoinKey(Array(long.utf8)))
        #expect(JoinKey(long.utf8) != JoinKey("customer-0000000000000002".utf8))
        #expect(JoinKey("a".utf8) != JoinKey("a\u{0}".utf8))
        #expect(JoinKey("0123456789abcdef".utf8) != JoinKey("0123456789abcdeg".utf8))
        #expect(Set([JoinKey("x".utf8), JoinKey("x".utf8), JoinKey(long.utf8)]).count == 2)
    }
}
