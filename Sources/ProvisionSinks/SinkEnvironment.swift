import ProvisionModel
import ProvisionPipeline

/// Resolves `${env:NAME}` references in sink specs against the server's environment.
enum SinkEnvironment {
    /// `text` itself, or the value of the variable it names.
    static func resolve(_ text: String, in environment: [String: String]) throws -> String {
        guard let variable = EnvironmentReference.variable(in: text) else { return text }
        guard let value = environment[variable], !value.isEmpty else {
            throw SinkError(reason: "SinkUnavailable", message: "the environment variable \(variable) is not set on the server")
        }
        return value
    }
}
