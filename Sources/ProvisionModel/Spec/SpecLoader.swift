import Yams

/// A spec file's name (as its author refers to it) and text.
public struct SpecFile: Sendable, Codable, Equatable {
    public var name: String
    public var content: String

    public init(name: String, content: String) {
        self.name = name
        self.content = content
    }
}

/// Parses and validates spec files. All-or-nothing: callers apply the documents only
/// when `errors` is empty.
public struct SpecLoadResult: Sendable {
    public var documents: [SpecDocument]
    public var errors: [SpecError]
    /// For each document, where its fields are.
    var fieldPositions: [[String: TextPosition]] = []

    /// Where the field at `path` (`spec.sink.webhook.url`) of document `index` is written, or
    /// the nearest enclosing field that is, or the document.
    public func location(ofField path: String, inDocument index: Int) -> SourceLocation {
        let document = documents[index].location
        guard fieldPositions.indices.contains(index) else { return document }
        var candidate = Substring(path)
        while !candidate.isEmpty {
            if let position = fieldPositions[index][String(candidate)] {
                return SourceLocation(file: document.file, line: position.line, column: position.column)
            }
            guard let dot = candidate.lastIndex(of: ".") else { break }
            candidate = candidate[..<dot]
        }
        return document
    }
}

public enum SpecLoader {
    /// - Parameter catalog: datasets that exist already; the files may reference them.
    public static func load(_ files: [SpecFile], catalog: [Dataset] = []) -> SpecLoadResult {
        var errors: [SpecError] = []
        var parsed: [ParsedDocument] = []
        for file in files {
            var reader = DocumentReader(file: file.name)
            parsed += reader.readAll(file.content)
            errors += reader.errors
        }

        // Names must be unique per kind across everything applied together.
        var seen: [String: SourceLocation] = [:]
        for document in parsed {
            let identity = "\(document.document.kind.rawValue)/\(document.document.name)"
            if let first = seen[identity] {
                let location = document.document.location
                errors.append(SpecError(file: location.file, line: location.line, column: location.column, path: "metadata.name",
                                        message: "\(document.document.kind.rawValue) '\(document.document.name)' is defined twice (first at \(first.file):\(first.line))"))
            } else {
                seen[identity] = document.document.location
            }
        }

        var datasets: [String: Dataset] = [:]
        for dataset in catalog { datasets[dataset.name] = dataset }
        for document in parsed {
            if case .dataset(let dataset, _) = document.document { datasets[dataset.name] = dataset }
        }
        for document in parsed {
            if case .dataProduct(let product, _) = document.document {
                errors += ProductValidator(product: product, marks: document.marks, file: document.file,
                                           datasets: datasets).validate()
            }
        }
        errors.sort { ($0.file, $0.line, $0.column) < ($1.file, $1.line, $1.column) }
        return SpecLoadResult(documents: parsed.map(\.document), errors: errors, fieldPositions: parsed.map(\.marks))
    }
}

/// A document with the positions of its fields, kept for validation messages.
struct ParsedDocument {
    var document: SpecDocument
    var file: String
    var marks: [String: TextPosition]
}
