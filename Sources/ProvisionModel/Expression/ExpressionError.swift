/// A parse or type error in an expression. `column` is 1-based within the expression text.
public struct ExpressionError: Error, Sendable, Equatable, CustomStringConvertible {
    public var column: Int
    public var message: String

    public init(column: Int, message: String) {
        self.column = column
        self.message = message
    }

    public var description: String { "column \(column): \(message)" }
}

/// Why an event could not be evaluated: a field holds a value of the wrong type.
/// The event goes to the dead-letter topic with this reason.
public struct EvaluationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}
