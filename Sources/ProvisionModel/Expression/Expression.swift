/// A type-checked expression, compiled to a closure tree that evaluates it without
/// looking at the syntax again.
public struct Expression: Sendable {
    public typealias Evaluator = @Sendable (EvaluationContext) throws(EvaluationError) -> Value

    public let source: String
    public let type: ValueType
    /// Top-level fields the expression reads.
    public let referencedFields: Set<String>
    /// Whether it reads personal data (a `pii` field): its value is personal data too.
    public let readsPII: Bool
    /// The slots the expression was compiled against; it reads only fields in them.
    public let slots: FieldSlots
    public let evaluator: Evaluator

    /// Parses and type-checks `source` against `scope`, giving the fields it reads slots in
    /// `slots` (shared by all expressions evaluated on one context).
    public static func compile(_ source: String, in scope: ExpressionScope, slots: inout FieldSlots) throws(ExpressionError) -> Expression {
        let syntax = try Parser.parse(source)
        var compiler = ExpressionCompiler(scope: scope, slots: slots)
        let compiled = try compiler.compile(syntax)
        slots = compiler.slots
        return Expression(source: source, type: compiled.type, referencedFields: compiler.referencedFields,
                          readsPII: compiler.readsPII, slots: slots, evaluator: compiled.evaluate)
    }

    /// Compiles an expression on its own slots.
    public static func compile(_ source: String, in scope: ExpressionScope) throws(ExpressionError) -> Expression {
        var slots = FieldSlots()
        return try compile(source, in: scope, slots: &slots)
    }

    /// Evaluates against a whole parsed event; convenient where speed does not matter.
    public func evaluate(event: JSONObject, eventTime: TimestampMilliseconds = 0, now: TimestampMilliseconds = 0)
        throws(EvaluationError) -> Value
    {
        try evaluator(EvaluationContext(slots: slots.values(from: event), eventTime: eventTime, now: now))
    }

    @inline(__always)
    public func evaluate(_ context: EvaluationContext) throws(EvaluationError) -> Value {
        try evaluator(context)
    }

    /// True only when the expression evaluates to `true`; null and false both reject.
    @inline(__always)
    public func matches(_ context: EvaluationContext) throws(EvaluationError) -> Bool {
        if case .boolean(true) = try evaluator(context) { return true }
        return false
    }
}

/// Edit distance, for "did you mean" suggestions.
public func editDistance(_ left: String, _ right: String) -> Int {
    let left = Array(left), right = Array(right)
    if left.isEmpty { return right.count }
    if right.isEmpty { return left.count }
    var previous = Array(0...right.count)
    var current = [Int](repeating: 0, count: right.count + 1)
    for leftIndex in 1...left.count {
        current[0] = leftIndex
        for rightIndex in 1...right.count {
            let cost = left[leftIndex - 1] == right[rightIndex - 1] ? 0 : 1
            current[rightIndex] = min(previous[rightIndex] + 1, current[rightIndex - 1] + 1, previous[rightIndex - 1] + cost)
        }
        swap(&previous, &current)
    }
    return previous[right.count]
}

/// The closest candidate within a small edit distance, if any.
public func closestMatch(to name: String, among candidates: [String]) -> String? {
    let scored = candidates.map { ($0, editDistance(name.lowercased(), $0.lowercased())) }
    guard let best = scored.min(by: { $0.1 < $1.1 }) else { return nil }
    return best.1 <= max(2, name.count / 3) ? best.0 : nil
}
