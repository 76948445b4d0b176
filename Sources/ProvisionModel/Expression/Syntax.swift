/// The parsed form of an expression, before type checking.
indirect enum Syntax {
    case literal(Value, column: Int)
    case field(path: [String], column: Int)
    case unary(UnaryOperator, Syntax, column: Int)
    case binary(BinaryOperator, Syntax, Syntax, column: Int)
    case membership(Syntax, [Syntax], negated: Bool, column: Int)
    case nullTest(Syntax, negated: Bool, column: Int)
    case call(name: String, arguments: [Syntax], column: Int)

    enum UnaryOperator { case not, negate }

    enum BinaryOperator: String {
        case and, or
        case equal = "==", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
        case plus = "+", minus = "-", times = "*", divide = "/"

        var isComparison: Bool {
            switch self {
            case .equal, .notEqual, .less, .lessOrEqual, .greater, .greaterOrEqual: return true
            default: return false
            }
        }
    }

    var column: Int {
        switch self {
        case .literal(_, let column), .field(_, let column), .unary(_, _, let column),
            .binary(_, _, _, let column), .membership(_, _, _, let column), .nullTest(_, _, let column),
            .call(_, _, let column):
            return column
        }
    }
}

/// A recursive-descent parser. Precedence, loosest first: `or`, `and`, `not`,
/// comparison / `in` / `is null`, `+ -`, `* /`, unary minus.
struct Parser {
    /// Longer expressions are refused: a filter is a line or a few, and the limit bounds the
    /// work one spec can ask of every event.
    static let maximumLength = 4096
    /// Parentheses, calls, `not` and unary minus nest at most this deep; the parser and the
    /// compiled closures recurse once per level, so the limit keeps a spec from exhausting
    /// the stack (5,000 parentheses would).
    static let maximumNesting = 64
    /// Operator chains (`a + b + c …`) build a tree as tall as the chain; evaluation recurses
    /// through it.
    static let maximumHeight = 256

    private let tokens: [Token]
    private var index = 0
    private var nesting = 0

    static func parse(_ text: String) throws(ExpressionError) -> Syntax {
        guard text.utf8.count <= maximumLength else {
            throw ExpressionError(column: maximumLength + 1, message: "the expression is longer than \(maximumLength) characters")
        }
        var parser = Parser(tokens: try Lexer.tokenize(text))
        if parser.current.kind == .end {
            throw ExpressionError(column: 1, message: "empty expression")
        }
        let syntax = try parser.parseOr()
        guard parser.current.kind == .end else {
            throw ExpressionError(column: parser.current.column, message: "unexpected \(parser.describe(parser.current))")
        }
        try checkHeight(syntax, remaining: maximumHeight)
        return syntax
    }

    private static func checkHeight(_ syntax: Syntax, remaining: Int) throws(ExpressionError) {
        guard remaining > 0 else {
            throw ExpressionError(column: syntax.column, message: "the expression has more than \(maximumHeight) operators in one chain; split it")
        }
        switch syntax {
        case .literal, .field: return
        case .unary(_, let operand, _), .nullTest(let operand, _, _): try checkHeight(operand, remaining: remaining - 1)
        case .binary(_, let left, let right, _):
            try checkHeight(left, remaining: remaining - 1)
            try checkHeight(right, remaining: remaining - 1)
        case .membership(let operand, let list, _, _):
            try checkHeight(operand, remaining: remaining - 1)
            for element in list { try checkHeight(element, remaining: remaining - 1) }
        case .call(_, let arguments, _):
            for argument in arguments { try checkHeight(argument, remaining: remaining - 1) }
        }
    }

    /// Enters one level of nesting at `column`, refusing to go past `maximumNesting`.
    private mutating func nest(at column: Int) throws(ExpressionError) {
        nesting += 1
        guard nesting <= Self.maximumNesting else {
            throw ExpressionError(column: column, message: "the expression nests more than \(Self.maximumNesting) levels deep")
        }
    }

    private init(tokens: [Token]) {
        self.tokens = tokens
    }

    private var current: Token { tokens[index] }

    private mutating func advance() -> Token {
        let token = tokens[index]
        if index < tokens.count - 1 { index += 1 }
        return token
    }

    private func describe(_ token: Token) -> String {
        switch token.kind {
        case .identifier(let name): return "'\(name)'"
        case .string(let text): return "string \"\(text)\""
        case .integer(let integer): return "number \(integer)"
        case .decimal(let number): return "number \(number)"
        case .timestamp(let milliseconds): return "timestamp \(Timestamp.format(milliseconds))"
        case .duration(let milliseconds): return "duration \(DurationText.format(milliseconds: milliseconds))"
        case .keyword(let keyword): return "'\(keyword.rawValue)'"
        case .symbol(let symbol): return "'\(symbol.rawValue)'"
        case .end: return "end of expression"
        }
    }

    private mutating func expect(_ symbol: Token.Symbol) throws(ExpressionError) {
        guard current.kind == .symbol(symbol) else {
            throw ExpressionError(column: current.column, message: "expected '\(symbol.rawValue)' but found \(describe(current))")
        }
        _ = advance()
    }

    private mutating func parseOr() throws(ExpressionError) -> Syntax {
        var left = try parseAnd()
        while current.kind == .keyword(.or) {
            let column = advance().column
            left = .binary(.or, left, try parseAnd(), column: column)
        }
        return left
    }

    private mutating func parseAnd() throws(ExpressionError) -> Syntax {
        var left = try parseNot()
        while current.kind == .keyword(.and) {
            let column = advance().column
            left = .binary(.and, left, try parseNot(), column: column)
        }
        return left
    }

    private mutating func parseNot() throws(ExpressionError) -> Syntax {
        if current.kind == .keyword(.not) {
            let column = advance().column
            try nest(at: column)
            defer { nesting -= 1 }
            return .unary(.not, try parseNot(), column: column)
        }
        return try parseComparison()
    }

    private mutating func parseComparison() throws(ExpressionError) -> Syntax {
        let left = try parseAdditive()
        switch current.kind {
        case .symbol(let symbol):
            guard let binary = Syntax.BinaryOperator(rawValue: symbol.rawValue), binary.isComparison else { return left }
            let column = advance().column
            let right = try parseAdditive()
            if case .symbol(let next) = current.kind, Syntax.BinaryOperator(rawValue: next.rawValue)?.isComparison == true {
                throw ExpressionError(column: current.column, message: "comparisons do not chain; join them with 'and'")
            }
            return .binary(binary, left, right, column: column)
        case .keyword(.in):
            let column = advance().column
            return .membership(left, try parseList(), negated: false, column: column)
        case .keyword(.not):
            let column = advance().column
            guard current.kind == .keyword(.in) else {
                throw ExpressionError(column: current.column, message: "expected 'in' after 'not'")
            }
            _ = advance()
            return .membership(left, try parseList(), negated: true, column: column)
        case .keyword(.is):
            let column = advance().column
            var negated = false
            if current.kind == .keyword(.not) {
                negated = true
                _ = advance()
            }
            guard current.kind == .keyword(.null) else {
                throw ExpressionError(column: current.column, message: "expected 'null' after 'is'")
            }
            _ = advance()
            return .nullTest(left, negated: negated, column: column)
        default:
            return left
        }
    }

    private mutating func parseList() throws(ExpressionError) -> [Syntax] {
        try expect(.openBracket)
        var elements: [Syntax] = []
        if current.kind == .symbol(.closeBracket) {
            throw ExpressionError(column: current.column, message: "empty list")
        }
        while true {
            elements.append(try parseAdditive())
            if current.kind == .symbol(.comma) {
                _ = advance()
                continue
            }
            try expect(.closeBracket)
            return elements
        }
    }

    private mutating func parseAdditive() throws(ExpressionError) -> Syntax {
        var left = try parseMultiplicative()
        while case .symbol(let symbol) = current.kind, symbol == .plus || symbol == .minus {
            let column = advance().column
            left = .binary(symbol == .plus ? .plus : .minus, left, try parseMultiplicative(), column: column)
        }
        return left
    }

    private mutating func parseMultiplicative() throws(ExpressionError) -> Syntax {
        var left = try parseUnary()
        while case .symbol(let symbol) = current.kind, symbol == .times || symbol == .divide {
            let column = advance().column
            left = .binary(symbol == .times ? .times : .divide, left, try parseUnary(), column: column)
        }
        return left
    }

    private mutating func parseUnary() throws(ExpressionError) -> Syntax {
        if current.kind == .symbol(.minus) {
            let column = advance().column
            try nest(at: column)
            defer { nesting -= 1 }
            return .unary(.negate, try parseUnary(), column: column)
        }
        return try parsePrimary()
    }

    private mutating func parsePrimary() throws(ExpressionError) -> Syntax {
        let token = advance()
        switch token.kind {
        case .string(let text): return .literal(.string(text), column: token.column)
        case .integer(let integer): return .literal(.integer(integer), column: token.column)
        case .decimal(let number): return .literal(.decimal(number), column: token.column)
        case .timestamp(let milliseconds): return .literal(.timestamp(milliseconds), column: token.column)
        case .duration(let milliseconds): return .literal(.duration(milliseconds), column: token.column)
        case .keyword(.true): return .literal(.boolean(true), column: token.column)
        case .keyword(.false): return .literal(.boolean(false), column: token.column)
        case .keyword(.null): return .literal(.null, column: token.column)
        case .symbol(.openParen):
            try nest(at: token.column)
            defer { nesting -= 1 }
            let inner = try parseOr()
            try expect(.closeParen)
            return inner
        case .identifier(let name):
            if current.kind == .symbol(.openParen) {
                _ = advance()
                try nest(at: token.column)
                defer { nesting -= 1 }
                var arguments: [Syntax] = []
                if current.kind != .symbol(.closeParen) {
                    while true {
                        arguments.append(try parseOr())
                        if current.kind == .symbol(.comma) {
                            _ = advance()
                            continue
                        }
                        break
                    }
                }
                try expect(.closeParen)
                return .call(name: name.lowercased(), arguments: arguments, column: token.column)
            }
            var path = [name]
            while current.kind == .symbol(.dot) {
                _ = advance()
                let part = advance()
                switch part.kind {
                case .identifier(let component): path.append(component)
                case .keyword(let keyword): path.append(keyword.rawValue)
                default:
                    throw ExpressionError(column: part.column, message: "expected a field name after '.'")
                }
            }
            return .field(path: path, column: token.column)
        case .end:
            throw ExpressionError(column: token.column, message: "unexpected end of expression")
        default:
            throw ExpressionError(column: token.column, message: "unexpected \(describe(token))")
        }
    }
}
