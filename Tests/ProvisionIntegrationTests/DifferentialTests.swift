import Foundation
import Testing

// A differential test of the expression language: random `where` and `select` expressions
// over every type, evaluated by Provision through real products (file sinks) and by
// PostgreSQL, translated by the documented semantics. PostgreSQL also reads Provision's
// output files with its own JSON parser and compares every row and value itself, so no
// Provision code takes part in the expected side or in the comparison.

/// SplitMix64: a small seeded generator, so a failing run can be replayed from its seed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var value = state
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        return value ^ (value >> 31)
    }
}

/// One expression in both languages, with its type.
struct TranslatedExpression {
    enum Kind: String { case boolean, integer, decimal, string, timestamp, duration }
    var kind: Kind
    var provision: String
    var sql: String
}

/// The facts both engines read. Fields are nullable and sometimes absent from the event.
struct Fact {
    var id: String
    var n: Int?
    var m: Int?
    var d: String?  // decimal text, exactly as written to both engines
    var e: String?
    var s: String?
    var t: String?
    var b: Bool?
    var ts: Int64?  // epoch milliseconds
    var ts2: Int64?
    var ox: Int?
    var oy: String?
    var hasObject: Bool
}

/// Strings for fields and literals: ASCII, accents, a quote, a space, and letters whose case
/// mapping is not one to one (ß upper-cases to SS). All NFC, no combining marks.
private let stringPool = ["alpha", "Beta", "GAMMA", "delta epsilon", "é", "Élan", "straße", "Øre", "it's", "", "zeta-9",
                          "Ünïcode", "a", "A", "ab", "abc", "mañana", "日本"]

private func timestampText(_ milliseconds: Int64) -> String {
    let date = Date(timeIntervalSince1970: Double(milliseconds) / 1000)
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: date)
}

private func jsonString(_ text: String) -> String {
    let data = try! JSONSerialization.data(withJSONObject: [text], options: [.withoutEscapingSlashes])
    let array = String(decoding: data, as: UTF8.self)
    return String(array.dropFirst().dropLast())
}

private func sqlString(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "''") + "'" }

struct ExpressionGenerator {
    var random: SeededGenerator

    private mutating func chance(_ percent: Int) -> Bool { Int(random.next() % 100) < percent }
    private mutating func pick<T>(_ items: [T]) -> T { items[Int(random.next() % UInt64(items.count))] }
    private mutating func integer(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(random.next() % UInt64(range.count))
    }

    mutating func decimalText() -> String {
        let scale = integer(0...3)
        var significand = integer(-2_000_000...2_000_000)
        if chance(10) { significand = integer(-9...9) }
        let negative = significand < 0
        var digits = String(abs(significand))
        if scale > 0 {
            while digits.count <= scale { digits = "0" + digits }
            digits.insert(".", at: digits.index(digits.endIndex, offsetBy: -scale))
        }
        return (negative ? "-" : "") + digits
    }

    mutating func fact(_ index: Int) -> Fact {
        func maybe<T>(_ value: T, _ generator: inout ExpressionGenerator) -> T? { generator.chance(15) ? nil : value }
        let base: Int64 = 1_781_740_800_000  // 2026-06-18T00:00:00Z
        let n = integer(-1000...1000), m = integer(-5...5), d = decimalText(), e = decimalText()
        let s = pick(stringPool), t = pick(stringPool), b = chance(50)
        let ts = base + Int64(integer(-10 * 86_400...10 * 86_400)) * 1000 + (chance(50) ? Int64(integer(0...999)) : 0)
        let ts2 = base + Int64(integer(-86_400...86_400)) * 1000
        let ox = integer(-100...100), oy = pick(stringPool)
        let hasObject = !chance(15)
        return Fact(id: String(format: "f-%04d", index), n: maybe(n, &self), m: maybe(m, &self), d: maybe(d, &self),
                    e: maybe(e, &self), s: maybe(s, &self), t: maybe(t, &self), b: maybe(b, &self), ts: maybe(ts, &self),
                    ts2: maybe(ts2, &self), ox: hasObject ? maybe(ox, &self) : nil, oy: hasObject ? maybe(oy, &self) : nil,
                    hasObject: hasObject)
    }

    // MARK: Expressions

    mutating func expression(_ kind: TranslatedExpression.Kind, depth: Int) -> TranslatedExpression {
        switch kind {
        case .boolean: return boolean(depth)
        case .integer: return integerExpression(depth)
        case .decimal: return decimal(depth)
        case .string: return string(depth)
        case .timestamp: return timestamp(depth)
        case .duration: return duration(depth)
        }
    }

    private func make(_ kind: TranslatedExpression.Kind, _ provision: String, _ sql: String) -> TranslatedExpression {
        TranslatedExpression(kind: kind, provision: provision, sql: sql)
    }

    private mutating func integerExpression(_ depth: Int) -> TranslatedExpression {
        if depth <= 0 || chance(30) {
            if chance(75) {
                let (field, column) = pick([("n", "n"), ("m", "m"), ("o.x", "o_x")])
                return make(.integer, field, column)
            }
            let value = integer(-50...50)
            return make(.integer, "(\(value))", "(\(value))::bigint")
        }
        switch integer(0...5) {
        case 0, 1:
            let a = integerExpression(depth - 1), b = integerExpression(depth - 1), op = pick(["+", "-"])
            return make(.integer, "(\(a.provision) \(op) \(b.provision))", "((\(a.sql)) \(op) (\(b.sql)))")
        case 2:
            // Products of leaves only, so no value comes near 64 bits.
            let a = integerExpression(0), b = integerExpression(0)
            return make(.integer, "(\(a.provision) * \(b.provision))", "((\(a.sql)) * (\(b.sql)))")
        case 3:
            let a = integerExpression(depth - 1)
            return make(.integer, "(-\(a.provision))", "(-(\(a.sql)))")
        case 4:
            let text = string(depth - 1)
            return make(.integer, "length(\(text.provision))", "length(\(text.sql))::bigint")
        default:
            let a = integerExpression(depth - 1), b = integerExpression(0)
            return make(.integer, "coalesce(\(a.provision), \(b.provision))", "COALESCE(\(a.sql), \(b.sql))")
        }
    }

    private mutating func numeric(_ depth: Int) -> TranslatedExpression {
        chance(60) ? decimal(depth) : integerExpression(depth)
    }

    private mutating func decimal(_ depth: Int) -> TranslatedExpression {
        if depth <= 0 || chance(25) {
            if chance(70) {
                let field = pick(["d", "e"])
                return make(.decimal, field, field)
            }
            // Always with a point: `5.0` is a decimal literal, `5` an integer one.
            var text = decimalText()
            if !text.contains(".") { text += ".0" }
            return make(.decimal, "(\(text))", "(\(text))::numeric")
        }
        switch integer(0...6) {
        case 0, 1:
            // At least one side a decimal, so the sum is one.
            let a = decimal(depth - 1), b = numeric(depth - 1), op = pick(["+", "-"])
            let (left, right) = chance(50) ? (a, b) : (b, a)
            return make(.decimal, "(\(left.provision) \(op) \(right.provision))", "((\(left.sql)) \(op) (\(right.sql)))")
        case 2:
            let a = decimal(0), b = numeric(0)
            return make(.decimal, "(\(a.provision) * \(b.provision))", "((\(a.sql)) * (\(b.sql)))")
        case 3, 4:
            // Division: max(6, scales) places, rounded half away from zero; by zero, null. The
            // SQL side computes it exactly with integer division, so no rounding of its own.
            let a = numeric(min(depth - 1, 1)), b = numeric(min(depth - 1, 1))
            let left = "(\(a.sql))::numeric", right = "(\(b.sql))::numeric"
            let places = "GREATEST(6, scale(\(left)), scale(\(right)))"
            let sql = "(CASE WHEN \(right) = 0 THEN NULL ELSE sign(\(left)) * sign(\(right)) * "
                + "div(2 * abs(\(left)) * ('1e' || \(places))::numeric + abs(\(right)), 2 * abs(\(right))) * ('1e-' || \(places))::numeric END)"
            return make(.decimal, "(\(a.provision) / \(b.provision))", sql)
        case 5:
            let a = decimal(depth - 1)
            return make(.decimal, "(-\(a.provision))", "(-(\(a.sql)))")
        default:
            let a = decimal(depth - 1), b = numeric(0)
            return make(.decimal, "coalesce(\(a.provision), \(b.provision))", "COALESCE(\(a.sql), (\(b.sql))::numeric)")
        }
    }

    /// SQL that prints a value as Provision writes it as text (in concat).
    private func sqlText(_ expression: TranslatedExpression) -> String {
        switch expression.kind {
        case .string: return "(\(expression.sql))"
        case .integer, .decimal: return "(\(expression.sql))::text"
        case .boolean: return "(CASE WHEN (\(expression.sql)) THEN 'true' WHEN NOT (\(expression.sql)) THEN 'false' END)"
        case .timestamp: return sqlTimestampText(expression.sql)
        case .duration: return "NULL"
        }
    }

    private mutating func string(_ depth: Int) -> TranslatedExpression {
        if depth <= 0 || chance(30) {
            if chance(70) {
                let (field, column) = pick([("s", "s"), ("t", "t"), ("o.y", "o_y"), ("id", "id")])
                return make(.string, field, column)
            }
            let text = pick(stringPool)
            let literal = text.contains("'") ? "\"\(text)\"" : "'\(text)'"
            return make(.string, literal, sqlString(text))
        }
        switch integer(0...4) {
        case 0, 1:
            let a = string(depth - 1), function = pick(["lower", "upper"])
            return make(.string, "\(function)(\(a.provision))", "\(function)((\(a.sql)) COLLATE \"und-x-icu\")")
        case 2, 3:
            let count = integer(2...3)
            var arguments: [TranslatedExpression] = []
            for _ in 0..<count {
                arguments.append(expression(pick([.string, .string, .integer, .decimal, .boolean, .timestamp]), depth: depth - 1))
            }
            return make(.string, "concat(\(arguments.map(\.provision).joined(separator: ", ")))",
                        "concat(\(arguments.map(sqlText).joined(separator: ", ")))")
        default:
            let a = string(depth - 1), b = string(0)
            return make(.string, "coalesce(\(a.provision), \(b.provision))", "COALESCE(\(a.sql), \(b.sql))")
        }
    }

    private mutating func durationLiteral() -> TranslatedExpression {
        let (text, sql) = pick([("90m", "90 minutes"), ("2h", "2 hours"), ("1d", "1 day"), ("250ms", "250 milliseconds"),
                                ("45s", "45 seconds"), ("12h", "12 hours"), ("7d", "7 days")])
        return make(.duration, text, "interval '\(sql)'")
    }

    private mutating func duration(_ depth: Int) -> TranslatedExpression {
        if chance(50) { return durationLiteral() }
        let a = timestamp(max(depth - 1, 0)), b = timestamp(0)
        return make(.duration, "(\(a.provision) - \(b.provision))", "((\(a.sql)) - (\(b.sql)))")
    }

    private mutating func timestamp(_ depth: Int) -> TranslatedExpression {
        if depth <= 0 || chance(35) {
            if chance(75) {
                let field = pick(["ts", "ts2"])
                return make(.timestamp, field, field)
            }
            let text = pick(["2026-06-18T00:00:00Z", "2026-06-20T12:30:00Z", "2026-06-10", "2026-06-18T09:15:00.250Z"])
            return make(.timestamp, text, "timestamptz '\(text.count == 10 ? text + "T00:00:00Z" : text)'")
        }
        switch integer(0...2) {
        case 0, 1:
            let a = timestamp(depth - 1), span = durationLiteral(), op = pick(["+", "-"])
            return make(.timestamp, "(\(a.provision) \(op) \(span.provision))", "((\(a.sql)) \(op) \(span.sql))")
        default:
            let a = timestamp(depth - 1), b = timestamp(0)
            return make(.timestamp, "coalesce(\(a.provision), \(b.provision))", "COALESCE(\(a.sql), \(b.sql))")
        }
    }

    private mutating func boolean(_ depth: Int) -> TranslatedExpression {
        if depth <= 0 || chance(10) {
            if chance(85) { return make(.boolean, "b", "b") }
            let value = chance(50)
            return make(.boolean, "\(value)", "\(value)")
        }
        switch integer(0...9) {
        case 0, 1, 2:
            // A comparison with null is false, whatever the operator.
            let op = pick(["==", "!=", "<", "<=", ">", ">="])
            let sqlOp = op == "==" ? "=" : (op == "!=" ? "<>" : op)
            let (a, b, collate): (TranslatedExpression, TranslatedExpression, String)
            switch integer(0...4) {
            case 0, 1: (a, b, collate) = (numeric(depth - 1), numeric(depth - 1), "")
            case 2: (a, b, collate) = (string(depth - 1), string(depth - 1), " COLLATE \"C\"")
            case 3: (a, b, collate) = (timestamp(depth - 1), timestamp(depth - 1), "")
            default: (a, b, collate) = (duration(depth - 1), durationLiteral(), "")
            }
            return make(.boolean, "(\(a.provision) \(op) \(b.provision))",
                        "COALESCE(((\(a.sql))\(collate)) \(sqlOp) ((\(b.sql))\(collate)), false)")
        case 3, 4:
            let a = boolean(depth - 1), b = boolean(depth - 1), op = pick(["and", "or"])
            return make(.boolean, "(\(a.provision) \(op) \(b.provision))", "((\(a.sql)) \(op.uppercased()) (\(b.sql)))")
        case 5:
            let a = boolean(depth - 1)
            return make(.boolean, "(not \(a.provision))", "(NOT (\(a.sql)))")
        case 6, 7:
            let negated = chance(40)
            let value: TranslatedExpression
            var literals: [(String, String)] = []
            if chance(50) {
                value = integerExpression(depth - 1)
                for _ in 0..<integer(1...4) {
                    let number = integer(-10...10)
                    literals.append(("\(number)", "(\(number))"))
                }
            } else {
                value = string(depth - 1)
                for _ in 0..<integer(1...4) {
                    let text = pick(stringPool)
                    literals.append((text.contains("'") ? "\"\(text)\"" : "'\(text)'", sqlString(text)))
                }
            }
            let list = literals.map(\.1).joined(separator: ", ")
            let sqlIn = "COALESCE((\(value.sql)) IN (\(list)), false)"
            let sql = negated ? "(CASE WHEN (\(value.sql)) IS NULL THEN false ELSE NOT \(sqlIn) END)" : sqlIn
            return make(.boolean, "(\(value.provision) \(negated ? "not in" : "in") [\(literals.map(\.0).joined(separator: ", "))])", sql)
        default:
            let negated = chance(50)
            let operand = expression(pick([.integer, .decimal, .string, .timestamp, .boolean]), depth: depth - 1)
            return make(.boolean, "(\(operand.provision) is \(negated ? "not " : "")null)",
                        "((\(operand.sql)) IS \(negated ? "NOT " : "")NULL)")
        }
    }
}

/// How Provision writes a timestamp: RFC 3339 in UTC, milliseconds only when there are some.
func sqlTimestampText(_ sql: String) -> String {
    let utc = "((\(sql)) AT TIME ZONE 'UTC')"
    return "(to_char(\(utc), 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN to_char(\(utc), 'MS') = '000' THEN '' "
        + "ELSE '.' || to_char(\(utc), 'MS') END || 'Z')"
}

/// The psql the suite's PostgreSQL answers to, on a script file.
private func psqlScript(_ script: String, in directory: String) throws -> String {
    let path = directory + "/script-\(UUID().uuidString).sql"
    try script.write(toFile: path, atomically: true, encoding: .utf8)
    let outputPath = path + ".out"
    _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["psql", try requirePostgresURL(), "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-f", path]
    // One handle for both: two handles on one file would write over each other.
    let output = FileHandle(forWritingAtPath: outputPath)
    process.standardOutput = output
    process.standardError = output
    try process.run()
    try waitForExit(process, timeout: .seconds(180), what: "psql")
    let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    guard process.terminationStatus == 0 else { throw Failure("psql failed on \(path):\n\(text.prefix(4000))") }
    return text
}

@Suite(.serialized, .timeLimit(.minutes(8)), .enabled(if: postgresURL != nil || runningInCI, "needs the PostgreSQL server scripts/test starts"))
struct DifferentialTests {
    static let factCount = 400
    static let selectProducts = 6
    static let expressionsPerSelect = 50
    static let whereProducts = 120

    @Test func expressionsAgreeWithPostgreSQL() async throws {
        let seed = UInt64(ProcessInfo.processInfo.environment["PROVISION_DIFFERENTIAL_SEED"] ?? "") ?? 20_261_201
        var generator = ExpressionGenerator(random: SeededGenerator(state: seed))
        let facts = (0..<Self.factCount).map { generator.fact($0) }
        var selects: [[TranslatedExpression]] = []
        for _ in 0..<Self.selectProducts {
            selects.append((0..<Self.expressionsPerSelect).map { _ in
                generator.expression([.boolean, .integer, .decimal, .decimal, .string, .timestamp][Int(generator.random.next() % 6)],
                                     depth: 1 + Int(generator.random.next() % 3))
            })
        }
        let wheres = (0..<Self.whereProducts).map { _ in generator.expression(.boolean, depth: 1 + Int(generator.random.next() % 3)) }

        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let work = server.dataDirectory + "-differential"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { removeTestData(work) }

        // Provision: the facts as envelopes (a null time falls back to the append time).
        var lines: [String] = []
        for fact in facts {
            var fields: [String] = [#""id":\#(jsonString(fact.id))"#]
            func add(_ name: String, _ text: String?) {
                // Nulls are written as null or left out, both must read as null.
                if let text { fields.append("\"\(name)\":\(text)") } else if fact.id.hasSuffix("1") { fields.append("\"\(name)\":null") }
            }
            add("n", fact.n.map(String.init))
            add("m", fact.m.map(String.init))
            add("d", fact.d)
            add("e", fact.e)
            add("s", fact.s.map(jsonString))
            add("t", fact.t.map(jsonString))
            add("b", fact.b.map { $0 ? "true" : "false" })
            add("ts", fact.ts.map { jsonString(timestampText($0)) })
            add("ts2", fact.ts2.map { jsonString(timestampText($0)) })
            if fact.hasObject {
                var inner: [String] = []
                if let x = fact.ox { inner.append(#""x":\#(x)"#) }
                if let y = fact.oy { inner.append(#""y":\#(jsonString(y))"#) }
                fields.append(#""o":{\#(inner.joined(separator: ","))}"#)
            }
            let time = fact.ts.map { #","time":\#(jsonString(timestampText($0)))"# } ?? ""
            lines.append(#"{"key":\#(jsonString(fact.id)),"value":{\#(fields.joined(separator: ","))}\#(time)}"#)
        }
        let produced = try server.ctl(["produce", "facts", "--file", "-", "--format", "envelope"],
                                      input: Data((lines.joined(separator: "\n") + "\n").utf8))
        #expect(produced.status == 0, "\(produced.errorOutput)")

        var documents = ["""
            apiVersion: provision/v1
            kind: Dataset
            metadata: {name: facts, owner: test}
            spec:
              topic: facts
              key: id
              time: ts
              schema: {id: string, n: integer, m: integer, d: decimal, e: decimal, s: string, t: string, b: boolean, ts: timestamp, ts2: timestamp, o: {x: integer, y: string}}
            """]
        func yamlQuoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "''") + "'" }
        for (index, expressions) in selects.enumerated() {
            let fields = (["id: id"] + expressions.enumerated().map { "e\($0.offset): \(yamlQuoted($0.element.provision))" })
                .map { "    \($0)" }.joined(separator: "\n")
            documents.append("""
                apiVersion: provision/v1
                kind: DataProduct
                metadata: {name: select-\(index)}
                spec:
                  from: facts
                  backfill: all
                  select:
                \(fields)
                  key: id
                  sink: {file: {path: select-\(index).jsonl}}
                """)
        }
        for (index, filter) in wheres.enumerated() {
            // Half read the whole log, half through a time window: both paths read the time field.
            let backfill = index % 2 == 0 ? "all" : "{from: 1970-01-01T00:00:00Z}"
            documents.append("""
                apiVersion: provision/v1
                kind: DataProduct
                metadata: {name: where-\(index)}
                spec:
                  from: facts
                  backfill: \(backfill)
                  where: \(yamlQuoted(filter.provision))
                  select: {id: id}
                  sink: {file: {path: where-\(index).jsonl}}
                """)
        }
        let applied = try server.ctl(["apply", "-f", try writeSpecs(documents.joined(separator: "\n---\n"), to: work + "/specs")])
        try #require(applied.status == 0, "the generated specs were refused (seed \(seed)):\n\(applied.errorOutput.prefix(4000))")
        for index in 0..<Self.selectProducts {
            _ = try await server.waitForProduct("select-\(index)", timeout: .seconds(240)) {
                $0.phase == "Live" && $0.lag == 0 && $0.recordsWritten == Self.factCount
            }
        }
        for index in 0..<Self.whereProducts {
            _ = try await server.waitForProduct("where-\(index)", timeout: .seconds(240)) { $0.phase == "Live" && $0.lag == 0 }
        }
        for name in (0..<Self.selectProducts).map({ "select-\($0)" }) + (0..<Self.whereProducts).map({ "where-\($0)" }) {
            let product = try await server.fetchProduct(name)
            #expect(product?.status["deadLettered"] as? Int ?? 0 == 0, "\(name) dead-lettered records (seed \(seed))")
        }

        // PostgreSQL: the same facts, and Provision's output lines as json, read by PostgreSQL.
        var outputs: [String] = []
        for index in 0..<Self.selectProducts {
            let text = try String(contentsOfFile: server.fileRoot + "/select-\(index).jsonl", encoding: .utf8)
            outputs += text.split(separator: "\n").map { "select-\(index)\u{2}\($0)" }
        }
        for index in 0..<Self.whereProducts {
            let text = (try? String(contentsOfFile: server.fileRoot + "/where-\(index).jsonl", encoding: .utf8)) ?? ""
            outputs += text.split(separator: "\n").map { "where-\(index)\u{2}\($0)" }
        }
        let outputPath = work + "/outputs.csv"
        try (outputs.joined(separator: "\n") + "\n").write(toFile: outputPath, atomically: true, encoding: .utf8)
        let schema = "differential_\(UUID().uuidString.prefix(8).lowercased())"
        func value(_ text: String?) -> String { text ?? "NULL" }
        let rows = facts.map { fact in
            "(" + [sqlString(fact.id), value(fact.n.map(String.init)), value(fact.m.map(String.init)), value(fact.d), value(fact.e),
                   value(fact.s.map(sqlString)), value(fact.t.map(sqlString)), value(fact.b.map { $0 ? "true" : "false" }),
                   value(fact.ts.map { "timestamptz " + sqlString(timestampText($0)) }),
                   value(fact.ts2.map { "timestamptz " + sqlString(timestampText($0)) }),
                   value(fact.ox.map(String.init)), value(fact.oy.map(sqlString))].joined(separator: ", ") + ")"
        }
        var script = """
            CREATE SCHEMA \(schema);
            SET search_path TO \(schema);
            CREATE TABLE facts (id text PRIMARY KEY, n bigint, m bigint, d numeric, e numeric, s text, t text, b boolean,
                                ts timestamptz, ts2 timestamptz, o_x bigint, o_y text);
            INSERT INTO facts VALUES \(rows.joined(separator: ",\n"));
            CREATE TABLE outputs (product text, doc json);
            \\copy outputs FROM '\(outputPath)' WITH (FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01')
            CREATE TEMP TABLE mismatches (product text, expression text, id text, actual text, expected text);

            """
        for (index, expressions) in selects.enumerated() {
            let product = "select-\(index)"
            script += """
                INSERT INTO mismatches SELECT '\(product)', 'row count', NULL, count(*)::text, '\(Self.factCount)'
                  FROM outputs WHERE product = '\(product)' HAVING count(*) <> \(Self.factCount) OR count(DISTINCT doc->>'id') <> \(Self.factCount);

                """
            for (field, expression) in expressions.enumerated() {
                let actual = "(o.doc->>'e\(field)')"
                let jsonType = "json_typeof(o.doc->'e\(field)')"
                let agrees: String
                let expectedText: String
                switch expression.kind {
                case .integer, .decimal:
                    agrees = "\(jsonType) IN ('number', 'null') AND \(actual)::numeric IS NOT DISTINCT FROM (\(expression.sql))::numeric "
                        + "AND scale(\(actual)::numeric) IS NOT DISTINCT FROM scale((\(expression.sql))::numeric)"
                    expectedText = "(\(expression.sql))::text"
                case .string:
                    agrees = "\(jsonType) IN ('string', 'null') AND \(actual) IS NOT DISTINCT FROM (\(expression.sql))"
                    expectedText = "(\(expression.sql))"
                case .boolean:
                    agrees = "\(jsonType) IN ('boolean', 'null') AND \(actual)::boolean IS NOT DISTINCT FROM (\(expression.sql))"
                    expectedText = "(\(expression.sql))::text"
                case .timestamp:
                    agrees = "\(jsonType) IN ('string', 'null') AND \(actual) IS NOT DISTINCT FROM \(sqlTimestampText(expression.sql))"
                    expectedText = sqlTimestampText(expression.sql)
                case .duration:
                    continue
                }
                script += """
                    INSERT INTO mismatches SELECT '\(product)', \(sqlString(expression.provision)), f.id, \(actual), \(expectedText)
                      FROM facts f LEFT JOIN outputs o ON o.product = '\(product)' AND o.doc->>'id' = f.id
                      WHERE NOT coalesce(\(agrees), false);

                    """
            }
        }
        for (index, filter) in wheres.enumerated() {
            let product = "where-\(index)"
            script += """
                INSERT INTO mismatches SELECT '\(product)', \(sqlString(filter.provision)), id, 'written', 'filtered out' FROM (
                  SELECT doc->>'id' AS id FROM outputs WHERE product = '\(product)' EXCEPT ALL SELECT id FROM facts WHERE \(filter.sql)) extra;
                INSERT INTO mismatches SELECT '\(product)', \(sqlString(filter.provision)), id, 'missing', 'selected' FROM (
                  SELECT id FROM facts WHERE \(filter.sql) EXCEPT ALL SELECT doc->>'id' FROM outputs WHERE product = '\(product)') absent;

                """
        }
        script += """
            SELECT 'compared', (SELECT count(*) FROM outputs), (SELECT count(*) FROM mismatches);
            SELECT product, expression, coalesce(id, '-'), coalesce(actual, 'null'), coalesce(expected, 'null')
              FROM mismatches ORDER BY product, id LIMIT 25;
            SET client_min_messages TO warning;
            DROP SCHEMA \(schema) CASCADE;
            """
        let report = try psqlScript(script, in: work).split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false) }
        guard let summary = report.first(where: { $0.first == "compared" }), summary.count == 3 else {
            throw Failure("no summary from PostgreSQL: \(report)")
        }
        let mismatches = report.filter { $0.first != "compared" }.map { $0.joined(separator: " | ") }
        #expect(Int(summary[1]) ?? 0 > Self.factCount * Self.selectProducts, "PostgreSQL read too few output lines")
        #expect(summary[2] == "0", """
            \(summary[2]) values differ from PostgreSQL (seed \(seed); product | expression | id | Provision | PostgreSQL):
            \(mismatches.joined(separator: "\n"))
            """)
    }
}
