import ArgumentParser
import Foundation
import ProvisionModel
import Yams

struct GetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get", abstract: "List products, datasets or git sources, or show one.")

    enum Kind: String, ExpressibleByArgument, CaseIterable {
        case products, product, datasets, dataset, sources, source
    }

    @Argument(help: "products, product NAME, datasets, dataset NAME, sources or source NAME.")
    var kind: Kind

    @Argument(help: "The name, with 'product' or 'dataset'.")
    var name: String?

    @Option(name: .shortAndLong, help: "table, json or yaml.")
    var output: OutputFormat = .table

    @OptionGroup var options: ClientOptions

    func validate() throws {
        if (kind == .product || kind == .dataset || kind == .source) && name == nil { throw ValidationError("'get \(kind.rawValue)' needs a NAME") }
    }

    func run() async throws {
        let client = try options.client
        switch kind {
        case .products:
            let products = try await client.listAll("/v1/products", as: ProductResource.self)
            try emit(products) { ProductTable.render(products) }
        case .product:
            let product = try await client.call(.GET, "/v1/products/\(name!.urlComponentEncoded)", as: ProductResource.self)
            try emit(product) { ProductTable.render([product]) }
        case .datasets:
            let datasets = try await client.listAll("/v1/datasets", as: DatasetResource.self)
            try emit(datasets) { DatasetTable.render(datasets) }
        case .dataset:
            let dataset = try await client.call(.GET, "/v1/datasets/\(name!.urlComponentEncoded)", as: DatasetResource.self)
            try emit(dataset) { DatasetTable.render([dataset]) }
        case .sources:
            let sources = try await client.call(.GET, "/v1/sources", as: [GitSourceStatus].self)
            try emit(sources) { GitSourceTable.render(sources) }
        case .source:
            let source = try await client.call(.GET, "/v1/sources/\(name!.urlComponentEncoded)", as: GitSourceStatus.self)
            try emit(source) { GitSourceTable.render([source]) }
        }
    }

    private func emit<T: Encodable>(_ value: T, table: () -> String) throws {
        switch output {
        case .table: print(table(), terminator: "")
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(value), as: UTF8.self))
        case .yaml:
            print(try YAMLEncoder().encode(value), terminator: "")
        }
    }
}

/// Fixed-width columns, as `kubectl get` prints them.
enum TextTable {
    static func render(_ rows: [[String]]) -> String {
        guard let header = rows.first else { return "" }
        var widths = header.map(\.count)
        for row in rows { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index] + 3, withPad: " ", startingAt: 0)
            }.joined()
        }.joined(separator: "\n") + "\n"
    }
}

enum ProductTable {
    static func render(_ products: [ProductResource]) -> String {
        var rows = [["NAME", "TEAM", "PHASE", "LAG", "RECORDS", "DEAD-LETTERED", "OUTPUT"]]
        for product in products {
            rows.append([product.metadata.name, product.metadata.team ?? "-", product.status.phase.rawValue,
                         String(product.status.lag), String(product.status.recordsWritten),
                         String(product.status.deadLettered), product.status.output ?? "-"])
        }
        return TextTable.render(rows)
    }
}

enum DatasetTable {
    static func render(_ datasets: [DatasetResource]) -> String {
        var rows = [["NAME", "OWNER", "TOPIC", "KEY", "TIME", "RECORDS", "FIELDS"]]
        for dataset in datasets {
            rows.append([dataset.metadata.name, dataset.metadata.owner ?? "-", dataset.spec.topic, dataset.spec.key ?? "-",
                         dataset.spec.time ?? "-", String(dataset.status.records),
                         dataset.spec.schema.fields.map(\.name).joined(separator: ",")])
        }
        return TextTable.render(rows)
    }
}
