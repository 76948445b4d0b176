import ArgumentParser
import Foundation
import ProvisionModel

/// The catalog, searched: what data the company has, and who reads it.
struct CatalogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "catalog", abstract: "Search the catalog of datasets, or describe one with its readers.",
        subcommands: [CatalogSearchCommand.self, CatalogDescribeCommand.self], defaultSubcommand: CatalogSearchCommand.self)
}

struct CatalogSearchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "search", abstract: "Datasets whose name, owner, team, description or field names contain every word.")

    @Argument(help: "Words to look for (none: every dataset).")
    var words: [String] = []

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let query = words.joined(separator: " ")
        let path = query.isEmpty ? "/v1/datasets" : "/v1/datasets?q=\(query.urlComponentEncoded)"
        let datasets = try await options.client.listAll(path, as: DatasetResource.self)
        print(DatasetTable.render(datasets), terminator: "")
    }
}

struct CatalogDescribeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "describe", abstract: "A dataset: its schema, its size, who reads it and where they write.")

    @Argument(help: "The dataset's name.")
    var dataset: String

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let resource = try await options.client.call(.GET, "/v1/datasets/\(dataset.urlComponentEncoded)", as: DatasetResource.self)
        print("Name:         \(resource.metadata.name)")
        print("Owner:        \(resource.metadata.owner ?? "-")")
        print("Description:  \(resource.metadata.description ?? "-")")
        print("Topic:        \(resource.spec.topic) (key \(resource.spec.key ?? "-"), time \(resource.spec.time ?? "log time"))")
        print("Records:      \(resource.status.records)")
        if let oldest = resource.status.oldestRecordTime, let newest = resource.status.newestRecordTime {
            print("Time span:    \(oldest) to \(newest)")
        }
        if let rate = resource.status.recentRecordsPerSecond { print("Recent rate:  \(rate) records/s (last 5 minutes)") }
        print("Schema:")
        for field in resource.spec.schema.fields { print("  \(field.name): \(field.type.name)\(field.pii ? " (pii)" : "")") }
        if let sample = resource.sample, !sample.isEmpty {
            print("Latest records:")
            for row in sample { print("  \(JSONWriter.string(row))") }
        }
        let lineage = resource.lineage ?? DatasetLineage(products: [], otherTeams: 0)
        print("Read by:")
        if lineage.products.isEmpty && lineage.otherTeams == 0 { print("  no product") }
        for reader in lineage.products {
            print("  \(reader.product) (team \(reader.team ?? "-"), \(reader.reads)) -> \(reader.output ?? "not started")")
        }
        if lineage.otherTeams > 0 { print("  and \(lineage.otherTeams) product\(lineage.otherTeams == 1 ? "" : "s") of other teams") }
    }
}
