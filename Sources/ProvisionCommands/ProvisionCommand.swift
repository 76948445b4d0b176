import ArgumentParser

/// `provisionctl`: the server and its client in one executable.
public struct ProvisionCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "provisionctl",
        abstract: "Self-service data provisioning: declare the data you need, where you need it.",
        subcommands: [ServeCommand.self, ApplyCommand.self, DiffCommand.self, PreviewCommand.self, GetCommand.self, DescribeCommand.self, DeleteCommand.self,
                      PauseCommand.self, ResumeCommand.self, ProduceCommand.self, TailCommand.self, DeadLettersCommand.self, RedeliverCommand.self, TokenCommand.self, SecretCommand.self, GitOpsCommand.self, CatalogCommand.self])

    public init() {}
}
