import ProvisionModel
import ProvisionPipeline
import ProvisionSinks

/// Builds the sink a product spec names. The one place that knows every sink kind.
public struct SinkFactory: Sendable {
    public let fileRoot: String
    public let checkpoints: any CheckpointStore

    public init(fileRoot: String, checkpoints: any CheckpointStore) {
        self.fileRoot = fileRoot
        self.checkpoints = checkpoints
    }

    public func makeSink(for spec: DataProductSpec, product: String, outputSchema: Schema) -> any Sink {
        switch spec.sink {
        case .file(let file):
            return FileSink(path: resolve(file.path), format: file.format, outputSchema: outputSchema, product: product,
                            checkpoints: checkpoints)
        }
    }

    /// Where the output of `spec` lives, for status.
    public func location(of spec: DataProductSpec) -> String {
        switch spec.sink {
        case .file(let file): return "file://\(resolve(file.path))"
        }
    }

    func resolve(_ relativePath: String) -> String {
        // Validation guarantees the path normalises inside the root.
        let normalized = FilePaths.normalizedRelativePath(relativePath) ?? relativePath
        return fileRoot.hasSuffix("/") ? fileRoot + normalized : "\(fileRoot)/\(normalized)"
    }
}
