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

@Suite struct StreamJoinTests {
    private func pairs(_ step: StreamJoin.Step) -> [String] {
        step.emissions.map { emission in
            switch emission {
            case .pair(let left, let right): return "\(left)+\(JSONWriter.string(right))"
            case .unmatched(let left): return "\(left)+null"
            }
        }
    }

    @Test func aPairIsEmittedAsSoonAsBothSidesAreRead() {
        var join = StreamJoin(within: 100, grace: 10, keepsUnmatched: false)
        // The order first, its payment later: the pair comes with the payment.
        #expect(pairs(join.left(id: 1, time: 1_000, key: key("o1"))) == [])
        #expect(pairs(join.right(time: 1_050, key: key("o1"), value: "p1")) == ["1+\"p1\""])
        // The payment first: the pair comes with the order.
        #expect(pairs(join.right(time: 1_060, key: key("o2"), value: "p2")) == [])
        #expect(pairs(join.left(id: 2, time: 1_070, key: key("o2"))) == ["2+\"p2\""])
        // Two payments in the window make two pairs, in their time order; one outside, none.
        #expect(pairs(join.right(time: 1_075, key: key("o3"), value: "b")) == [])
        #expect(pairs(join.right(time: 1_072, key: key("o3"), value: "a")) == [])
        #expect(pairs(join.left(id: 3, time: 1_090, key: key("o3"))) == ["3+\"a\"", "3+\"b\""])
        #expect(pairs(join.right(time: 1_195, key: key("o3"), value: "far")) == [])
    }

    @Test func aLeftJoinEmitsAnUnmatchedEventOnceItsWindowClosesInStreamTime() {
        var join = StreamJoin(within: 100, grace: 10, keepsUnmatched: true)
        _ = join.left(id: 1, time: 1_000, key: key("o1"))
        _ = join.left(id: 2, time: 1_000, key: key("o2"))
        _ = join.right(time: 1_020, key: key("o2"), value: "p2")
        // Window end + grace = 1_110: not closed at 1_110, closed past it.
        #expect(pairs(join.right(time: 1_110, key: key("x"), value: "x")) == [])
        let closing = join.right(time: 1_111, key: key("x"), value: "x")
        #expect(pairs(closing) == ["1+null"], "only the event without a pair, once")
        #expect(closing.released == [1, 2])
        #expect(pairs(join.advance(to: 5_000)) == [])
        #expect(join.bufferedCount == 0)
    }

    @Test func aRecordOlderThanStreamTimeMinusGraceIsLate() {
        var join = StreamJoin(within: 100, grace: 10, keepsUnmatched: true)
        _ = join.left(id: 1, time: 1_000, key: key("o1"))
        #expect(!join.right(time: 990, key: key("o1"), value: "on time").late)
        let late = join.right(time: 989, key: key("o1"), value: "late")
        #expect(late.late && late.emissions.isEmpty)
        #expect(join.left(id: 2, time: 900, key: key("o1")).late)
        #expect(join.streamTime == 1_000)
    }

    /// Every pair of on-time events is found whatever order they come in, so arrival order
    /// changes only the order of the output, never what it holds.
    @Test func thePairsDependOnlyOnTheRecords() {
        var random = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            let lefts = (0..<60).map { (id: $0, time: Int64($0 * 10 + Int.random(in: 0..<5, using: &random)), key: "k\(Int.random(in: 0..<6, using: &random))") }
            let rights = (0..<60).map { (time: Int64(Int.random(in: 0..<640, using: &random)), key: "k\(Int.random(in: 0..<6, using: &random))", value: $0) }
                .sorted { $0.time < $1.time }
            let within: Int64 = 25
            var expected: Set<String> = []
            var unmatched: Set<Int> = Set(lefts.map(\.id))
            for left in lefts {
                for right in rights where right.key == left.key && abs(right.time - left.time) <= within {
                    expected.insert("\(left.id)+\(right.value)")
                    unmatched.remove(left.id)
                }
            }
            // Merged in time order, and one input entirely before the other (a grace that
            // covers the whole span, so nothing is late).
            for order in ["merged", "lefts first", "rights first"] {
                var join = StreamJoin(within: within, grace: order == "merged" ? 5 : 10_000, keepsUnmatched: true)
                var found: Set<String> = []
                var emittedUnmatched: [Int] = []
                func take(_ step: StreamJoin.Step) {
                    #expect(!step.late)
                    for emission in step.emissions {
                        switch emission {
                        case .pair(let left, .integer(let right)): found.insert("\(left)+\(right)")
                        case .unmatched(let left): emittedUnmatched.append(left)
                        default: Issue.record("unexpected \(emission)")
                        }
                    }
                }
                let leftSteps = lefts.map { left in { (join: inout StreamJoin) in join.left(id: left.id, time: left.time, key: key(left.key)) } }
                let rightSteps = rights.map { right in
                    { (join: inout StreamJoin) in join.right(time: right.time, key: key(right.key), value: .integer(Int64(right.value))) }
                }
                switch order {
                case "merged":
                    var (l, r) = (0, 0)
                    while l < lefts.count || r < rights.count {
                        if r >= rights.count || (l < lefts.count && lefts[l].time <= rights[r].time) {
                            take(leftSteps[l](&join)); l += 1
                        } else {
                            take(rightSteps[r](&join)); r += 1
                        }
                    }
                case "lefts first":
                    for step in leftSteps { take(step(&join)) }
                    for step in rightSteps { take(step(&join)) }
                default:
                    for step in rightSteps { take(step(&join)) }
                    for step in leftSteps { take(step(&join)) }
                }
                take(join.advance(to: 1_000_000))
                #expect(found == expected, "\(order)")
                #expect(Set(emittedUnmatched) == unmatched && emittedUnmatched.count == unmatched.count, "\(order)")
            }
        }
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
