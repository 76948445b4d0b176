import Testing
@testable import ProvisionModel

private let schema = Schema(fields: [
    .init(name: "order_id", type: .string),
    .init(name: "amount", type: .decimal),
    .init(name: "items", type: .integer),
    .init(name: "region", type: .string),
    .init(name: "paid", type: .boolean),
    .init(name: "placed_at", type: .timestamp),
    .init(name: "note", type: .string),
    .init(name: "extra", type: .json),
    .init(name: "customer", type: .object(Schema(fields: [.init(name: "name", type: .string)]))),
])
private let scope = ExpressionScope(datasetName: "orders", schema: schema)

private func evaluate(_ source: String, _ event: JSONValue, now: TimestampMilliseconds = 0) throws -> Value {
    guard case .object(let object) = event else { throw EvaluationError("not an object") }
    return try Expression.compile(source, in: scope).evaluate(event: object, now: now)
}

private let order: JSONValue = [
    "order_id": "o-1", "amount": 1250.5, "items": 3, "region": "EU", "paid": true,
    "placed_at": "2026-08-01T12:00:00Z", "note": nil, "customer": ["name": "Ada Lovelace"],
]

@Suite struct ExpressionTests {
    @Test func comparisonsAndLogic() throws {
        #expect(try evaluate("amount > 1000 and region == \"EU\"", order) == .boolean(true))
        #expect(try evaluate("amount > 1000 and region == 'US'", order) == .boolean(false))
        #expect(try evaluate("items >= 3 or false", order) == .boolean(true))
        #expect(try evaluate("not paid", order) == .boolean(false))
        #expect(try evaluate("amount != 1250.5", order) == .boolean(false))
        #expect(try evaluate("items < 3.5", order) == .boolean(true))
    }

    @Test func precedenceIsArithmeticThenComparisonThenNotAndOr() throws {
        #expect(try evaluate("1 + 2 * 3 == 7", order) == .boolean(true))
        #expect(try evaluate("(1 + 2) * 3 == 9", order) == .boolean(true))
        #expect(try evaluate("false and true or true", order) == .boolean(true))
        #expect(try evaluate("not false and false", order) == .boolean(false))
        #expect(try evaluate("-items + 5", order) == .integer(2))
    }

    @Test func arithmetic() throws {
        #expect(try evaluate("items * 2", order) == .integer(6))
        #expect(try evaluate("amount * 2", order) == .decimal(2501))
        #expect(JSONWriter.string(try evaluate("amount * 2", order).json) == "2501.0")
        #expect(try evaluate("items / 2", order) == .decimal(1.5))
        #expect(try evaluate("items / 0", order) == .null)
        #expect(try evaluate("amount - items", order) == .decimal(1247.5))
    }

    @Test func decimalsAreExact() throws {
        let money: JSONValue = ["amount": .decimal("512.40"), "items": 3, "order_id": "o-1"]
        #expect(try evaluate("amount * 3", money) == .decimal("1537.20"))
        #expect(JSONWriter.string(try evaluate("amount * 3", money).json) == "1537.20")
        #expect(try evaluate("amount + 0.1 + 0.2 == amount + 0.3", money) == .boolean(true))
        #expect(try evaluate("amount * 1.5", money).json == .decimal("768.600"), "a product's scale is the sum of the scales")
        #expect(JSONWriter.string(try evaluate("amount - 12.4", money).json) == "500.00")
        // Division: max(6, scales) places, rounded half away from zero.
        #expect(JSONWriter.string(try evaluate("amount / 3", money).json) == "170.800000")
        #expect(JSONWriter.string(try evaluate("2 / 3", money).json) == "0.666667")
        #expect(JSONWriter.string(try evaluate("-2 / 3", money).json) == "-0.666667")
        #expect(JSONWriter.string(try evaluate("1 / 8", money).json) == "0.125000")
        #expect(JSONWriter.string(try evaluate("0.0000005 / 1", money).json) == "0.0000005")
        // A notional with 17 significant digits is copied digit for digit.
        let trade: JSONValue = ["amount": .decimal("841692974686333.29")]
        #expect(JSONWriter.string(try evaluate("amount", trade).json) == "841692974686333.29")
        #expect(try evaluate("amount > 841692974686333.28", trade) == .boolean(true))
        // Integers and decimals compare exactly, beyond what a double can tell apart.
        let big: JSONValue = ["items": 9_007_199_254_740_993, "amount": .decimal("9007199254740992.0")]
        #expect(try evaluate("items > amount", big) == .boolean(true))
        #expect(try evaluate("amount == 9007199254740992", big) == .boolean(true))
    }

    @Test func overflowIsAnErrorOfTheEventNotAWrongNumber() throws {
        let huge: JSONValue = ["amount": .decimal("99999999999999999999999999999999999999"), "items": .integer(.max)]
        #expect(throws: EvaluationError.self) { try evaluate("amount + 1", huge) }
        #expect(throws: EvaluationError.self) { try evaluate("amount * 10", huge) }
        #expect(throws: EvaluationError.self) { try evaluate("items + 1", huge) }
        #expect(throws: EvaluationError.self) { try evaluate("items * 2", huge) }
        // Fractional digits beyond 38 in all are rounded off, not an overflow.
        let tiny: JSONValue = ["amount": .decimal("0.1234567890123456789012345678901234567")]
        #expect(JSONWriter.string(try evaluate("amount * amount", tiny).json) == "0.01524157875323883675049535156256668192")
        // A value beyond 38 digits is refused when read as a decimal.
        #expect(throws: EvaluationError.self) { try evaluate("amount > 1", ["amount": .number(1e300)]) }
    }

    @Test func membership() throws {
        #expect(try evaluate("region in [\"EU\", \"UK\"]", order) == .boolean(true))
        #expect(try evaluate("region not in [\"EU\", \"UK\"]", order) == .boolean(false))
        #expect(try evaluate("items in [1, 2]", order) == .boolean(false))
        #expect(try evaluate("note in [\"x\"]", order) == .boolean(false))
    }

    @Test func nullsAreSafe() throws {
        #expect(try evaluate("note is null", order) == .boolean(true))
        #expect(throws: ExpressionError.self) { try evaluate("undeclared is null", order) }
    }

    @Test func comparisonsWithNullAreFalse() throws {
        let withNulls: JSONValue = ["amount": nil, "region": "EU"]
        #expect(try evaluate("amount > 10", withNulls) == .boolean(false))
        #expect(try evaluate("amount <= 10", withNulls) == .boolean(false))
        #expect(try evaluate("amount == 10", withNulls) == .boolean(false))
        #expect(try evaluate("amount != 10", withNulls) == .boolean(false))
        #expect(try evaluate("amount + 1", withNulls) == .null)
        #expect(try evaluate("amount is not null", withNulls) == .boolean(false))
        #expect(try evaluate("items is null", withNulls) == .boolean(true))
        // Three-valued and/or: null and false is false; null or true is true.
        #expect(try evaluate("amount > 1 or region == 'EU'", withNulls) == .boolean(true))
        #expect(try evaluate("paid and false", withNulls) == .boolean(false))
        #expect(try evaluate("paid or false", withNulls) == .null)
    }

    @Test func functions() throws {
        #expect(try evaluate("lower(region)", order) == .string("eu"))
        #expect(try evaluate("upper(customer.name)", order) == .string("ADA LOVELACE"))
        #expect(try evaluate("length(order_id)", order) == .integer(3))
        #expect(try evaluate("concat(order_id, '/', region, '/', items)", order) == .string("o-1/EU/3"))
        #expect(try evaluate("concat(note, 'x')", order) == .string("x"))
        #expect(try evaluate("coalesce(note, region)", order) == .string("EU"))
        #expect(try evaluate("coalesce(note)", order) == .null)
        #expect(try evaluate("lower(note)", order) == .null)
        #expect(try evaluate("length(note)", order) == .null)
        #expect(try evaluate("now()", order, now: 1_000) == .timestamp(1_000))
    }

    @Test func timestampsAndDurations() throws {
        let placed = Timestamp.parse("2026-08-01T12:00:00Z")!
        #expect(try evaluate("placed_at", order) == .timestamp(placed))
        #expect(try evaluate("placed_at >= 2026-08-01", order) == .boolean(true))
        #expect(try evaluate("placed_at < \"2026-08-01T11:59:59Z\"", order) == .boolean(false))
        #expect(try evaluate("placed_at + 1h", order) == .timestamp(placed + 3_600_000))
        #expect(try evaluate("placed_at > now() - 7d", order, now: placed + 86_400_000) == .boolean(true))
        #expect(try evaluate("placed_at > now() - 7d", order, now: placed + 8 * 86_400_000) == .boolean(false))
        #expect(try evaluate("now() - placed_at", order, now: placed + 90_000) == .duration(90_000))
    }

    @Test func nestedFieldsAndLiterals() throws {
        #expect(try evaluate("customer.name == 'Ada Lovelace'", order) == .boolean(true))
        #expect(try evaluate("null", order) == .null)
        #expect(try evaluate("12.5", order) == .decimal(12.5))
        #expect(try evaluate("'it\\'s'", order) == .string("it's"))
    }

    @Test func aFieldOfTheWrongTypeIsAnEvaluationErrorNotACrash() {
        let bad: JSONValue = ["amount": "lots", "items": "three"]
        #expect(throws: EvaluationError.self) { try evaluate("items > 1", bad) }
        #expect(throws: EvaluationError.self) { try evaluate("amount > 1", bad) }
        let badTime: JSONValue = ["placed_at": "yesterday"]
        #expect(throws: EvaluationError.self) { try evaluate("placed_at > 2026-01-01", badTime) }
    }

    @Test func decimalsSentAsStringsAreRead() throws {
        #expect(try evaluate("amount > 1000", ["amount": "1000.01"]) == .boolean(true))
    }

    struct TypeErrorCase: Sendable, CustomTestStringConvertible {
        var source: String
        var column: Int
        var message: String
        var testDescription: String { source }
    }

    @Test(arguments: [
        TypeErrorCase(source: "amout > 1", column: 1, message: "unknown field 'amout' in dataset 'orders' (did you mean 'amount'?)"),
        TypeErrorCase(source: "region > 1", column: 8, message: "cannot compare string with integer using '>'"),
        TypeErrorCase(source: "paid < true", column: 6, message: "cannot compare boolean with boolean using '<'"),
        TypeErrorCase(source: "amount and paid", column: 1, message: "'and' needs a boolean, found decimal"),
        TypeErrorCase(source: "not region", column: 1, message: "'not' needs a boolean, found string"),
        TypeErrorCase(source: "region + 'x'", column: 8, message: "'+' does not join strings; use concat(a, b)"),
        TypeErrorCase(source: "lower(items)", column: 7, message: "lower() needs a string, found integer"),
        TypeErrorCase(source: "length()", column: 1, message: "length() takes 1 argument, found 0"),
        TypeErrorCase(source: "coalesce(region, items)", column: 18, message: "coalesce() arguments must share a type: string and integer"),
        TypeErrorCase(source: "extra == 1", column: 7, message: "a json field can only be tested with 'is null'"),
        TypeErrorCase(source: "items in ['a']", column: 11, message: "cannot compare integer with string using 'in'"),
        TypeErrorCase(source: "placed_at > 'soon'", column: 11, message: "'soon' is not an RFC 3339 timestamp"),
        TypeErrorCase(source: "region.name == 'x'", column: 1, message: "'region' is a string, not an object"),
        TypeErrorCase(source: "-region", column: 1, message: "cannot negate a string"),
    ])
    func typeErrorsNameTheColumn(_ testCase: TypeErrorCase) {
        do {
            _ = try Expression.compile(testCase.source, in: scope)
            Issue.record("expected a type error")
        } catch {
            #expect(error == ExpressionError(column: testCase.column, message: testCase.message))
        }
    }

    @Test(arguments: [
        ("amount > ", 10, "unexpected end of expression"),
        ("amount > > 1", 10, "unexpected '>'"),
        ("(amount > 1", 12, "expected ')' but found end of expression"),
        ("region == 'EU", 11, "unterminated string"),
        ("a == 1 == 2", 8, "comparisons do not chain; join them with 'and'"),
        ("amount >= 1 && paid", 13, "'&' is not an operator (use 'and')"),
        ("region in []", 12, "empty list"),
        ("placed_at > 2026-13-01", 13, "invalid timestamp literal '2026-13-01'"),
        ("amount > 3months", 10, "invalid number or duration '3months'"),
        ("region is 'x'", 11, "expected 'null' after 'is'"),
        ("", 1, "empty expression"),
        ("amount $ 2", 8, "unexpected character '$'"),
    ])
    func parseErrorsPointAtTheColumn(_ source: String, _ column: Int, _ message: String) {
        #expect(throws: ExpressionError(column: column, message: message)) {
            try Expression.compile(source, in: scope)
        }
    }

    @Test func expressionTypesAreInferred() throws {
        #expect(try Expression.compile("amount * items", in: scope).type == .decimal)
        #expect(try Expression.compile("items + 1", in: scope).type == .integer)
        #expect(try Expression.compile("concat(region)", in: scope).type == .string)
        #expect(try Expression.compile("placed_at - 1d", in: scope).type == .timestamp)
        #expect(try Expression.compile("coalesce(items, amount)", in: scope).type == .decimal)
        #expect(try Expression.compile("amount > 1", in: scope).referencedFields == ["amount"])
    }
}
