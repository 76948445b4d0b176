/// A token of the expression language, with its 1-based column.
struct Token: Equatable {
    enum Kind: Equatable {
        case identifier(String)
        case string(String)
        case integer(Int64)
        case decimal(DecimalNumber)
        case timestamp(TimestampMilliseconds)
        case duration(Int64)
        case keyword(Keyword)
        case symbol(Symbol)
        case end
    }

    enum Keyword: String {
        case and, or, not, `in`, `is`, null, `true`, `false`
    }

    enum Symbol: String {
        case equal = "==", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
        case plus = "+", minus = "-", times = "*", divide = "/"
        case openParen = "(", closeParen = ")", openBracket = "[", closeBracket = "]", comma = ",", dot = "."
    }

    var kind: Kind
    var column: Int
}

/// Splits an expression into tokens. Timestamps (`2026-01-01T00:00:00Z`, `2026-01-01`) and
/// durations (`90d`, `1h30m`) are literals of their own, so `placed_at > now() - 7d` reads as written.
struct Lexer {
    private let characters: [Character]
    private var index = 0

    init(_ text: String) {
        characters = Array(text)
    }

    static func tokenize(_ text: String) throws(ExpressionError) -> [Token] {
        var lexer = Lexer(text)
        var tokens: [Token] = []
        while true {
            let token = try lexer.next()
            tokens.append(token)
            if token.kind == .end { return tokens }
        }
    }

    private mutating func next() throws(ExpressionError) -> Token {
        while index < characters.count, characters[index].isWhitespace { index += 1 }
        let column = index + 1
        guard index < characters.count else { return Token(kind: .end, column: column) }
        let character = characters[index]

        if character == "\"" || character == "'" {
            return Token(kind: .string(try readString(quote: character)), column: column)
        }
        if character.isASCII, character.isNumber {
            return Token(kind: try readNumberLike(), column: column)
        }
        if character == "_" || character.isLetter {
            var word = ""
            while index < characters.count,
                characters[index] == "_" || characters[index].isLetter || characters[index].isNumber
            {
                word.append(characters[index])
                index += 1
            }
            if let keyword = Token.Keyword(rawValue: word.lowercased()) {
                return Token(kind: .keyword(keyword), column: column)
            }
            return Token(kind: .identifier(word), column: column)
        }
        let twoCharacter = index + 1 < characters.count ? String([character, characters[index + 1]]) : ""
        if let symbol = Token.Symbol(rawValue: twoCharacter) {
            index += 2
            return Token(kind: .symbol(symbol), column: column)
        }
        if character == "=" {
            throw ExpressionError(column: column, message: "'=' is not an operator (use '==' to compare)")
        }
        if character == "&" || character == "|" {
            let word = character == "&" ? "and" : "or"
            throw ExpressionError(column: column, message: "'\(character)' is not an operator (use '\(word)')")
        }
        if let symbol = Token.Symbol(rawValue: String(character)) {
            index += 1
            return Token(kind: .symbol(symbol), column: column)
        }
        throw ExpressionError(column: column, message: "unexpected character '\(character)'")
    }

    private mutating func readString(quote: Character) throws(ExpressionError) -> String {
        let column = index + 1
        index += 1
        var text = ""
        while index < characters.count {
            let character = characters[index]
            index += 1
            if character == quote { return text }
            if character == "\\" {
                guard index < characters.count else { break }
                let escaped = characters[index]
                index += 1
                switch escaped {
                case "n": text.append("\n")
                case "t": text.append("\t")
                default: text.append(escaped)
                }
            } else {
                text.append(character)
            }
        }
        throw ExpressionError(column: column, message: "unterminated string")
    }

    private mutating func readNumberLike() throws(ExpressionError) -> Token.Kind {
        let start = index
        let column = index + 1
        // A run of characters that can belong to a number, a timestamp or a duration.
        while index < characters.count {
            let character = characters[index]
            let continuesTimestamp =
                (character == "-" || character == ":" || character == "+")
                && index > start && index + 1 < characters.count && characters[index + 1].isNumber
                && looksLikeDateSoFar(from: start)
            if character.isNumber || character == "." || character.isLetter || continuesTimestamp {
                // A '.' followed by a letter is a path separator, not a decimal point.
                if character == ".", index + 1 < characters.count, !characters[index + 1].isNumber { break }
                index += 1
            } else {
                break
            }
        }
        let text = String(characters[start..<index])
        if text.contains("-") {
            guard let timestamp = Timestamp.parse(text) else {
                throw ExpressionError(column: column, message: "invalid timestamp literal '\(text)'")
            }
            return .timestamp(timestamp)
        }
        if text.contains(where: { $0.isLetter }) {
            if text.contains("."), text.lowercased().contains("e"), let number = DecimalNumber(text) {
                return .decimal(number)
            }
            guard let milliseconds = DurationText.parseMilliseconds(text) else {
                throw ExpressionError(column: column, message: DurationText.parse(text) == .tooLong
                                        ? DurationText.problem(with: text, examples: "")
                                        : "invalid number or duration '\(text)'")
            }
            return .duration(milliseconds)
        }
        if text.contains(".") {
            guard let number = DecimalNumber(text) else {
                throw ExpressionError(column: column, message: "invalid decimal literal '\(text)' (at most 38 digits, 38 after the point)")
            }
            return .decimal(number)
        }
        guard let integer = Int64(text) else {
            throw ExpressionError(column: column, message: "integer literal '\(text)' is out of range")
        }
        return .integer(integer)
    }

    /// True when the characters from `start` to here read `dddd` or `dddd-dd…`: a date in progress.
    private func looksLikeDateSoFar(from start: Int) -> Bool {
        let prefix = characters[start..<index]
        guard prefix.count >= 4 else { return false }
        return prefix.prefix(4).allSatisfy(\.isNumber)
    }
}
