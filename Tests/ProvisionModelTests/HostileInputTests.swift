import Testing
@testable import ProvisionModel

/// Inputs a hostile or careless author sends: each one used to trap, exhaust the stack or
/// take time and memory exponential in its size. Each must be a located error instead.
private let ordersDataset = """
    apiVersion: provision/v1
    kind: Dataset
    metadata: {name: orders, owner: sales}
    spec:
      topic: orders
      key: order_id
      time: placed_at
      schema: {order_id: string, amount: decimal, placed_at: timestamp, shipped_at: timestamp}
    """

private func product(_ specBody: String) -> String {
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: hostile, team: risk}
    spec:
      from: orders
    \(specBody)
    """
}

/// Every error as `line:column: path: message`.
private func errors(_ yaml: String) -> [String] {
    SpecLoader.load([SpecFile(name: "catalog.yaml", content: ordersDataset), SpecFile(name: "hostile.yaml", content: yaml)])
        .errors.map { "\($0.file):\($0.line):\($0.column): \($0.path): \($0.message)" }
}

// A regression here is exponential time, not a wrong answer: the limit turns it into a failure.
@Suite(.timeLimit(.minutes(1))) struct HostileInputTests {
    @Test(arguments: [
        ("  backfill: {since: 9223372036854775807ms1ms}\n  sink: {file: {path: a.jsonl}}",
         "hostile.yaml:6:21: spec.backfill.since: '9223372036854775807ms1ms' is longer than the limit of 3652425d"),
        ("  backfill: {since: 3652426d}\n  sink: {file: {path: a.jsonl}}",
         "hostile.yaml:6:21: spec.backfill.since: '3652426d' is longer than the limit of 3652425d"),
        ("  sink: {webhook: {url: \"http://127.0.0.1:9/x\", batch: {maxBytes: 9999999999999GiB}}}",
         "hostile.yaml:6:67: spec.sink.webhook.batch.maxBytes: '9999999999999GiB' is more than the limit of 256MiB"),
        ("  sink: {webhook: {url: \"http://127.0.0.1:9/x\", timeout: 3650d}}",
         "hostile.yaml:6:58: spec.sink.webhook.timeout: '3650d' is longer than the limit of 7d"),
        ("  where: now() - 9223372036854775807ms1ms < placed_at\n  sink: {file: {path: a.jsonl}}",
         "hostile.yaml:6:18: spec.where: '9223372036854775807ms1ms' is longer than the limit of 3652425d"),
    ])
    func outOfRangeNumbersAreLocatedErrors(_ body: String, _ expected: String) {
        let found = errors(product(body))
        #expect(found.contains { $0.hasPrefix(expected) }, "all errors: \(found)")
    }

    @Test func eventTimesOutsideTheCalendarAreErrorsOfTheEvent() throws {
        let schema = Schema(fields: [.init(name: "placed_at", type: .timestamp)])
        let filter = try Expression.compile("placed_at + 1d > now()", in: ExpressionScope(datasetName: "orders", schema: schema))
        let event = JSONObject([("placed_at", .integer(Int64.max))])
        #expect(throws: EvaluationError.self) { try filter.evaluate(event: event, now: 0) }
        // The last representable millisecond plus a day is still arithmetic, not a trap.
        let latest = JSONObject([("placed_at", .integer(Timestamp.latest))])
        #expect(try filter.evaluate(event: latest, now: 0) == .boolean(true))
    }

    @Test(arguments: [
        (String(repeating: "(", count: 5000) + "1" + String(repeating: ")", count: 5000) + " == 1", "is longer than 4096 characters"),
        (String(repeating: "(", count: 100) + "1" + String(repeating: ")", count: 100) + " == 1", "nests more than 64 levels deep"),
        (String(repeating: "not ", count: 100) + "true", "nests more than 64 levels deep"),
        (String(repeating: "-", count: 100) + "1 > 0", "nests more than 64 levels deep"),
        (String(repeating: "abs(", count: 100) + "1" + String(repeating: ")", count: 100) + " > 0", "nests more than 64 levels deep"),
        (Array(repeating: "1", count: 1000).joined(separator: "+") + " > 0", "more than 256 operators in one chain"),
    ])
    func deepExpressionsAreRefusedBeforeTheyExhaustTheStack(_ source: String, _ message: String) {
        let scope = ExpressionScope(datasetName: "orders", schema: Schema(fields: [.init(name: "a", type: .integer)]))
        #expect {
            _ = try Expression.compile(source, in: scope)
        } throws: { error in
            (error as? ExpressionError)?.message.contains(message) == true
        }
    }

    @Test func expressionsUpToTheLimitsStillCompile() throws {
        let scope = ExpressionScope(datasetName: "orders", schema: Schema(fields: [.init(name: "a", type: .integer)]))
        let nested = String(repeating: "(", count: 60) + "a" + String(repeating: ")", count: 60) + " > 0"
        #expect(try Expression.compile(nested, in: scope).evaluate(event: JSONObject([("a", 1)]), now: 0) == .boolean(true))
        let chain = Array(repeating: "a", count: 200).joined(separator: " + ") + " == 200"
        #expect(try Expression.compile(chain, in: scope).evaluate(event: JSONObject([("a", 1)]), now: 0) == .boolean(true))
    }

    /// Nine levels of ten aliases each expand to 10⁹ fields: 2.8 GiB and minutes before the
    /// limit. The error comes from a walk that stops at the limit.
    @Test func anAliasBombIsRefusedWithoutExpandingIt() {
        var yaml = "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: bomb}\nspec:\n  topic: bomb\n  schema:\n"
        yaml += "    l0: &l0 {a: string, b: string, c: string, d: string, e: string, f: string, g: string, h: string, i: string, j: string}\n"
        for level in 1...9 {
            let aliases = (0..<10).map { "f\($0): *l\(level - 1)" }.joined(separator: ", ")
            yaml += "    l\(level): &l\(level) {\(aliases)}\n"
        }
        let found = SpecLoader.load([SpecFile(name: "bomb.yaml", content: yaml)]).errors.map(\.description)
        #expect(found.count == 1 && found[0].contains("bomb.yaml:") && found[0].contains("more than 20000 values once its aliases are expanded"),
                "all errors: \(found)")
    }

    @Test func aSchemaNestedDeeperThanTheLimitIsALocatedError() {
        var schema = "string"
        for _ in 0..<300 { schema = "{inner: \(schema)}" }
        let yaml = "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: deep}\nspec: {topic: deep, schema: {outer: \(schema)}}\n"
        let found = SpecLoader.load([SpecFile(name: "deep.yaml", content: yaml)]).errors.map(\.description)
        #expect(found.count == 1 && found[0].hasPrefix("deep.yaml:4:") && found[0].contains("nests more than 32 levels deep"),
                "all errors: \(found)")
    }

    @Test func aSpecFileLargerThanTheLimitIsRefused() {
        let yaml = ordersDataset + "\n# " + String(repeating: "x", count: 1 << 20)
        let found = SpecLoader.load([SpecFile(name: "big.yaml", content: yaml)]).errors.map(\.description)
        #expect(found == ["big.yaml:1:1: the file is \(yaml.utf8.count) bytes; a spec file may have at most 1048576"])
    }
}

extension HostileInputTests {
    /// An alias used as a mapping key: the YAML composer hashes keys to find duplicates, and
    /// hashing an expanded alias visits every copy.
    @Test func anAliasBombAsAMappingKeyIsRefusedWithoutExpandingIt() {
        var yaml = "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: bomb}\nspec:\n  topic: bomb\n  schema:\n"
        yaml += "    l0: &l0 {a: string, b: string, c: string, d: string, e: string, f: string, g: string, h: string, i: string, j: string}\n"
        for level in 1...9 {
            let aliases = (0..<10).map { "f\($0): *l\(level - 1)" }.joined(separator: ", ")
            yaml += "    l\(level): &l\(level) {\(aliases)}\n"
        }
        yaml += "    ? *l9\n    : string\n    ? *l8\n    : string\n"
        let found = SpecLoader.load([SpecFile(name: "bomb.yaml", content: yaml)]).errors.map(\.description)
        #expect(found.count == 1 && found[0].contains("bomb.yaml:") && found[0].contains("more than 20000 values once its aliases are expanded"),
                "all errors: \(found)")
    }
}

extension HostileInputTests {
    @Test func anchorsAndAliasesWithinTheLimitsStillLoad() {
        let yaml = """
            apiVersion: provision/v1
            kind: Dataset
            metadata: {name: shared}
            spec:
              topic: shared
              schema:
                home: &address {city: string, street: string}
                work: *address
            """
        let result = SpecLoader.load([SpecFile(name: "shared.yaml", content: yaml)])
        #expect(result.errors.isEmpty, "\(result.errors)")
        guard case .dataset(let dataset, _)? = result.documents.first else {
            Issue.record("no dataset")
            return
        }
        #expect(dataset.spec.schema.fieldNames == ["home", "work"])
    }

    @Test func theBudgetCountsExpandedNodesAndDepthExactly() {
        // 1 mapping + 2 × (key + value) = 5 nodes, 2 levels.
        #expect(YAMLBudget.check("{a: 1, b: 2}", maximumNodes: 5, maximumDepth: 2) == nil)
        #expect(YAMLBudget.check("{a: 1, b: 2}", maximumNodes: 4, maximumDepth: 2)?.message.contains("more than 4 values") == true)
        // The alias adds its anchor's 3 nodes and 2 levels below `b`.
        let aliased = "{a: &x {k: v}, b: *x}"
        #expect(YAMLBudget.check(aliased, maximumNodes: 9, maximumDepth: 3) == nil)
        #expect(YAMLBudget.check(aliased, maximumNodes: 8, maximumDepth: 3) != nil)
        #expect(YAMLBudget.check("{a: {b: [1]}}", maximumNodes: 100, maximumDepth: 3)?.message.contains("more than 3 levels") == true)
        #expect(YAMLBudget.check("{a: &x {b: [1]}, c: *x}", maximumNodes: 100, maximumDepth: 4) == nil)
    }
}
