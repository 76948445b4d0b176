/// Type-checks syntax against a scope and builds the evaluator in the same pass.
struct ExpressionCompiler {
    struct Compiled {
        var type: ValueType
        var evaluate: Expression.Evaluator
        /// Set when the expression is a literal, so comparisons can coerce it at compile time.
        var constant: Value?
    }

    let scope: ExpressionScope
    private(set) var referencedFields: Set<String> = []
    /// Whether the expression reads a `pii` field, or an object holding one.
    private(set) var readsPII = false
    private(set) var slots: FieldSlots

    init(scope: ExpressionScope, slots: FieldSlots) {
        self.scope = scope
        self.slots = slots
    }

    mutating func compile(_ syntax: Syntax) throws(ExpressionError) -> Compiled {
        switch syntax {
        case .literal(let value, _):
            let type: ValueType
            switch value {
            case .null: type = .null
            case .boolean: type = .boolean
            case .integer: type = .integer
            case .decimal: type = .decimal
            case .string: type = .string
            case .timestamp: type = .timestamp
            case .duration: type = .duration
            case .json: type = .json
            }
            return Compiled(type: type, evaluate: { _ throws(EvaluationError) in value }, constant: value)

        case .field(let path, let column):
            return try compileField(path: path, column: column)

        case .unary(.not, let operand, let column):
            let inner = try compile(operand)
            try require(inner, is: .boolean, column: column, context: "'not'")
            let evaluate = inner.evaluate
            return Compiled(type: .boolean, evaluate: { context throws(EvaluationError) in
                switch try evaluate(context) {
                case .boolean(let flag): return .boolean(!flag)
                default: return .null
                }
            })

        case .unary(.negate, let operand, let column):
            let inner = try compile(operand)
            let evaluate = inner.evaluate
            switch inner.type {
            case .integer:
                return Compiled(type: .integer, evaluate: { context throws(EvaluationError) in
                    guard case .integer(let integer) = try evaluate(context) else { return .null }
                    guard integer != .min else { throw EvaluationError("integer overflow: -(\(integer))") }
                    return .integer(-integer)
                })
            case .decimal:
                return Compiled(type: .decimal, evaluate: { context throws(EvaluationError) in
                    if case .decimal(let number) = try evaluate(context) { return .decimal(number.negated) }
                    return .null
                })
            case .duration:
                return Compiled(type: .duration, evaluate: { context throws(EvaluationError) in
                    if case .duration(let milliseconds) = try evaluate(context) { return .duration(-milliseconds) }
                    return .null
                })
            default:
                throw ExpressionError(column: column, message: "cannot negate a \(inner.type.name)")
            }

        case .binary(let binaryOperator, let leftSyntax, let rightSyntax, let column):
            var left = try compile(leftSyntax)
            var right = try compile(rightSyntax)
            switch binaryOperator {
            case .and, .or:
                try require(left, is: .boolean, column: leftSyntax.column, context: "'\(binaryOperator.rawValue)'")
                try require(right, is: .boolean, column: rightSyntax.column, context: "'\(binaryOperator.rawValue)'")
                return Self.logical(binaryOperator == .and, left.evaluate, right.evaluate)
            case .equal, .notEqual, .less, .lessOrEqual, .greater, .greaterOrEqual:
                try coerceForComparison(&left, &right, column: column, operatorText: binaryOperator.rawValue,
                                        ordering: binaryOperator != .equal && binaryOperator != .notEqual)
                return Self.comparison(binaryOperator, left.evaluate, right.evaluate)
            case .plus, .minus, .times, .divide:
                return try arithmetic(binaryOperator, left, right, column: column)
            }

        case .membership(let valueSyntax, let elementSyntaxes, let negated, let column):
            var value = try compile(valueSyntax)
            var elements: [Expression.Evaluator] = []
            for elementSyntax in elementSyntaxes {
                var element = try compile(elementSyntax)
                try coerceForComparison(&value, &element, column: elementSyntax.column, operatorText: "in", ordering: false)
                elements.append(element.evaluate)
            }
            _ = column
            let evaluateValue = value.evaluate
            let constantElements = try? elements.map { evaluate throws(EvaluationError) in
                try evaluate(EvaluationContext(slots: [], eventTime: 0, now: 0))
            }
            let isConstantList = elementSyntaxes.allSatisfy { if case .literal = $0 { return true } else { return false } }
            if isConstantList, let constantElements {
                return Compiled(type: .boolean, evaluate: { context throws(EvaluationError) in
                    let candidate = try evaluateValue(context)
                    if candidate.isNull { return .boolean(false) }
                    let found = constantElements.contains { Self.compare(candidate, $0) == 0 }
                    return .boolean(found != negated)
                })
            }
            let elementEvaluators = elements
            return Compiled(type: .boolean, evaluate: { context throws(EvaluationError) in
                let candidate = try evaluateValue(context)
                if candidate.isNull { return .boolean(false) }
                for element in elementEvaluators where Self.compare(candidate, try element(context)) == 0 {
                    return .boolean(!negated)
                }
                return .boolean(negated)
            })

        case .nullTest(let operand, let negated, _):
            let evaluate = try compile(operand).evaluate
            return Compiled(type: .boolean, evaluate: { context throws(EvaluationError) in
                .boolean(try evaluate(context).isNull != negated)
            })

        case .call(let name, let arguments, let column):
            return try compileCall(name: name, arguments: arguments, column: column)
        }
    }

    // MARK: Fields

    private mutating func compileField(path: [String], column: Int) throws(ExpressionError) -> Compiled {
        var schema = scope.schema
        var type: ValueType = .null
        for (depth, component) in path.enumerated() {
            guard let field = schema.field(named: component) else {
                let where_ = depth == 0 ? "dataset '\(scope.datasetName)'" : "'\(path[..<depth].joined(separator: "."))'"
                var message = "unknown field '\(component)' in \(where_)"
                if let suggestion = closestMatch(to: component, among: schema.fieldNames) {
                    message += " (did you mean '\(suggestion)'?)"
                }
                throw ExpressionError(column: column, message: message)
            }
            type = field.type
            if field.pii { readsPII = true }
            if depth == path.count - 1, case .object(let nested) = field.type, nested.containsPII { readsPII = true }
            if depth < path.count - 1 {
                switch field.type {
                case .object(let nested): schema = nested
                case .json: break
                default:
                    throw ExpressionError(column: column, message: "'\(path[...depth].joined(separator: "."))' is a \(field.type.name), not an object")
                }
                if case .json = field.type {
                    type = .json
                    break
                }
            }
        }
        referencedFields.insert(path[0])
        slots.noteRead(path)
        let slot = slots.slot(for: path[0])
        let dottedPath = path.joined(separator: ".")
        let resultType = type
        if path.count == 1 {
            let name = path[0]
            return Compiled(type: resultType, evaluate: { context throws(EvaluationError) in
                try FieldReader.read(context.slots[slot], as: resultType, path: name)
            })
        }
        let nestedPath = Array(path.dropFirst())
        return Compiled(type: resultType, evaluate: { context throws(EvaluationError) in
            var current = context.slots[slot]
            for component in nestedPath {
                guard case .object(let object)? = current else { return .null }
                current = object[component]
            }
            return try FieldReader.read(current, as: resultType, path: dottedPath)
        })
    }

    // MARK: Type rules

    private func require(_ compiled: Compiled, is type: ValueType, column: Int, context: String) throws(ExpressionError) {
        guard compiled.type == type || compiled.type == .null else {
            throw ExpressionError(column: column, message: "\(context) needs a \(type.name), found \(compiled.type.name)")
        }
    }

    /// Checks that two sides can be compared and coerces string literals to timestamps
    /// when compared with a timestamp (`placed_at >= "2026-01-01"`).
    private func coerceForComparison(_ left: inout Compiled, _ right: inout Compiled, column: Int, operatorText: String,
                                     ordering: Bool) throws(ExpressionError)
    {
        if left.type == .null || right.type == .null {
            throw ExpressionError(column: column, message: "comparing with null is always false; use 'is null' or 'is not null'")
        }
        for (target, other) in [(0, right.type), (1, left.type)] where other == .timestamp {
            let side = target == 0 ? left : right
            if side.type == .string, case .string(let text)? = side.constant {
                guard let milliseconds = Timestamp.parse(text) else {
                    throw ExpressionError(column: column, message: "'\(text)' is not an RFC 3339 timestamp")
                }
                let coerced = Compiled(type: .timestamp, evaluate: { _ throws(EvaluationError) in .timestamp(milliseconds) },
                                       constant: .timestamp(milliseconds))
                if target == 0 { left = coerced } else { right = coerced }
            }
        }
        let compatible: Bool
        switch (left.type, right.type) {
        case _ where left.type.isNumeric && right.type.isNumeric: compatible = true
        case (.string, .string), (.timestamp, .timestamp), (.duration, .duration): compatible = true
        case (.boolean, .boolean): compatible = !ordering
        default: compatible = false
        }
        guard compatible else {
            if left.type == .json || right.type == .json {
                throw ExpressionError(column: column, message: "a json field can only be tested with 'is null'")
            }
            throw ExpressionError(column: column, message: "cannot compare \(left.type.name) with \(right.type.name) using '\(operatorText)'")
        }
    }

    /// Orders two values of comparable types; nil when either is null or they do not compare.
    static func compare(_ left: Value, _ right: Value) -> Int? {
        switch (left, right) {
        case (.integer(let a), .integer(let b)): return a < b ? -1 : (a == b ? 0 : 1)
        case (.decimal(let a), .decimal(let b)): return DecimalNumber.compare(a, b)
        case (.integer(let a), .decimal(let b)): return -DecimalNumber.compare(b, a)
        case (.decimal(let a), .integer(let b)): return DecimalNumber.compare(a, b)
        case (.string(let a), .string(let b)): return a < b ? -1 : (a == b ? 0 : 1)
        case (.timestamp(let a), .timestamp(let b)): return a < b ? -1 : (a == b ? 0 : 1)
        case (.duration(let a), .duration(let b)): return a < b ? -1 : (a == b ? 0 : 1)
        case (.boolean(let a), .boolean(let b)): return a == b ? 0 : (a ? 1 : -1)
        default: return nil
        }
    }

    private static func comparison(_ binaryOperator: Syntax.BinaryOperator, _ left: @escaping Expression.Evaluator,
                                   _ right: @escaping Expression.Evaluator) -> Compiled
    {
        let test: @Sendable (Int) -> Bool
        switch binaryOperator {
        case .equal: test = { $0 == 0 }
        case .notEqual: test = { $0 != 0 }
        case .less: test = { $0 < 0 }
        case .lessOrEqual: test = { $0 <= 0 }
        case .greater: test = { $0 > 0 }
        default: test = { $0 >= 0 }
        }
        return Compiled(type: .boolean, evaluate: { context throws(EvaluationError) in
            // A comparison with null is false, whichever the operator.
            guard let order = compare(try left(context), try right(context)) else { return .boolean(false) }
            return .boolean(test(order))
        })
    }

    private static func logical(_ isAnd: Bool, _ left: @escaping Expression.Evaluator,
                                _ right: @escaping Expression.Evaluator) -> Compiled
    {
        Compiled(type: .boolean, evaluate: { context throws(EvaluationError) in
            let leftValue = try left(context)
            if case .boolean(let flag) = leftValue, flag != isAnd { return .boolean(flag) }
            let rightValue = try right(context)
            if case .boolean(let flag) = rightValue, flag != isAnd { return .boolean(flag) }
            if leftValue.isNull || rightValue.isNull { return .null }
            return .boolean(isAnd)
        })
    }

    private func arithmetic(_ binaryOperator: Syntax.BinaryOperator, _ left: Compiled, _ right: Compiled,
                            column: Int) throws(ExpressionError) -> Compiled
    {
        let resultType: ValueType
        switch (binaryOperator, left.type, right.type) {
        case (.divide, let a, let b) where a.isNumeric && b.isNumeric: resultType = .decimal
        case (_, .integer, .integer): resultType = .integer
        case (_, let a, let b) where a.isNumeric && b.isNumeric: resultType = .decimal
        case (.plus, .timestamp, .duration), (.minus, .timestamp, .duration), (.plus, .duration, .timestamp):
            resultType = .timestamp
        case (.minus, .timestamp, .timestamp), (.plus, .duration, .duration), (.minus, .duration, .duration):
            resultType = .duration
        case (.times, .duration, .integer), (.times, .integer, .duration): resultType = .duration
        case (.plus, .string, .string):
            throw ExpressionError(column: column, message: "'+' does not join strings; use concat(a, b)")
        default:
            throw ExpressionError(column: column, message: "cannot apply '\(binaryOperator.rawValue)' to \(left.type.name) and \(right.type.name)")
        }
        let evaluateLeft = left.evaluate, evaluateRight = right.evaluate
        return Compiled(type: resultType, evaluate: { context throws(EvaluationError) in
            try Self.applyArithmetic(binaryOperator, try evaluateLeft(context), try evaluateRight(context))
        })
    }

    /// Null in, null out; division by zero is null rather than a crash or infinity. An
    /// overflow is an error of the event (it goes to the dead-letter topic with the reason),
    /// never a wrapped or rounded-off number.
    static func applyArithmetic(_ binaryOperator: Syntax.BinaryOperator, _ left: Value, _ right: Value) throws(EvaluationError) -> Value {
        func decimal(_ value: Value) -> DecimalNumber? {
            switch value {
            case .integer(let integer): return DecimalNumber(integer)
            case .decimal(let number): return number
            default: return nil
            }
        }
        switch (left, right) {
        case (.integer(let a), .integer(let b)) where binaryOperator != .divide:
            let result: (Int64, Bool)
            switch binaryOperator {
            case .plus: result = a.addingReportingOverflow(b)
            case .minus: result = a.subtractingReportingOverflow(b)
            default: result = a.multipliedReportingOverflow(by: b)
            }
            if result.1 { throw EvaluationError("integer overflow: \(a) \(binaryOperator.rawValue) \(b) does not fit 64 bits") }
            return .integer(result.0)
        case (.timestamp(let a), .duration(let b)): return .timestamp(try checked(a, binaryOperator, b))
        case (.duration(let a), .timestamp(let b)): return .timestamp(try checked(a, .plus, b))
        case (.timestamp(let a), .timestamp(let b)): return .duration(try checked(a, .minus, b))
        case (.duration(let a), .duration(let b)): return .duration(try checked(a, binaryOperator, b))
        case (.duration(let a), .integer(let b)), (.integer(let b), .duration(let a)): return .duration(try checked(a, .times, b))
        default:
            guard let a = decimal(left), let b = decimal(right) else { return .null }
            do throws(DecimalNumber.Overflow) {
                switch binaryOperator {
                case .plus: return .decimal(try a.adding(b))
                case .minus: return .decimal(try a.subtracting(b))
                case .times: return .decimal(try a.multiplied(by: b))
                default: return try a.divided(by: b).map(Value.decimal) ?? .null
                }
            } catch {
                throw EvaluationError("\(error): \(a) \(binaryOperator.rawValue) \(b)")
            }
        }
    }

    /// Millisecond arithmetic on times and durations, with overflow an error of the event.
    private static func checked(_ a: Int64, _ binaryOperator: Syntax.BinaryOperator, _ b: Int64) throws(EvaluationError) -> Int64 {
        let (result, overflow): (Int64, Bool)
        switch binaryOperator {
        case .plus: (result, overflow) = a.addingReportingOverflow(b)
        case .minus: (result, overflow) = a.subtractingReportingOverflow(b)
        default: (result, overflow) = a.multipliedReportingOverflow(by: b)
        }
        if overflow { throw EvaluationError("time overflow: \(a) ms \(binaryOperator.rawValue) \(b) does not fit 64 bits") }
        return result
    }

    // MARK: Functions

    static let functionNames = ["lower", "upper", "length", "concat", "coalesce", "now"]

    private mutating func compileCall(name: String, arguments: [Syntax], column: Int) throws(ExpressionError) -> Compiled {
        var compiled: [Compiled] = []
        for argument in arguments { compiled.append(try compile(argument)) }
        func arity(_ expected: Int) throws(ExpressionError) {
            guard compiled.count == expected else {
                throw ExpressionError(column: column, message: "\(name)() takes \(expected) argument\(expected == 1 ? "" : "s"), found \(compiled.count)")
            }
        }
        switch name {
        case "lower", "upper":
            try arity(1)
            try require(compiled[0], is: .string, column: arguments[0].column, context: "\(name)()")
            let evaluate = compiled[0].evaluate
            let isLower = name == "lower"
            return Compiled(type: .string, evaluate: { context throws(EvaluationError) in
                guard case .string(let text) = try evaluate(context) else { return .null }
                return .string(isLower ? text.lowercased() : text.uppercased())
            })
        case "length":
            try arity(1)
            try require(compiled[0], is: .string, column: arguments[0].column, context: "length()")
            let evaluate = compiled[0].evaluate
            return Compiled(type: .integer, evaluate: { context throws(EvaluationError) in
                guard case .string(let text) = try evaluate(context) else { return .null }
                return .integer(Int64(text.count))
            })
        case "concat":
            guard !compiled.isEmpty else {
                throw ExpressionError(column: column, message: "concat() takes at least one argument")
            }
            let evaluators = compiled.map(\.evaluate)
            return Compiled(type: .string, evaluate: { context throws(EvaluationError) in
                var text = ""
                for evaluate in evaluators { text += try evaluate(context).text }
                return .string(text)
            })
        case "coalesce":
            guard !compiled.isEmpty else {
                throw ExpressionError(column: column, message: "coalesce() takes at least one argument")
            }
            var resultType: ValueType = .null
            for (index, argument) in compiled.enumerated() where argument.type != .null {
                if resultType == .null || resultType == argument.type {
                    resultType = argument.type
                } else if resultType.isNumeric && argument.type.isNumeric {
                    resultType = .decimal
                } else {
                    throw ExpressionError(column: arguments[index].column,
                                          message: "coalesce() arguments must share a type: \(resultType.name) and \(argument.type.name)")
                }
            }
            let evaluators = compiled.map(\.evaluate)
            let widenToDecimal = resultType == .decimal
            return Compiled(type: resultType, evaluate: { context throws(EvaluationError) in
                for evaluate in evaluators {
                    let value = try evaluate(context)
                    if value.isNull { continue }
                    if widenToDecimal, case .integer(let integer) = value { return .decimal(DecimalNumber(integer)) }
                    return value
                }
                return .null
            })
        case "now":
            try arity(0)
            return Compiled(type: .timestamp, evaluate: { context throws(EvaluationError) in .timestamp(context.now) })
        default:
            var message = "unknown function '\(name)'"
            if let suggestion = closestMatch(to: name, among: Self.functionNames) {
                message += " (did you mean '\(suggestion)'?)"
            }
            throw ExpressionError(column: column, message: message)
        }
    }
}
