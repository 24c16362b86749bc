// Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with the matching HTTP status.
namespace Pregate.Server;

/// <summary>A request the server refuses; becomes an OpenAI-style error response with <see cref="Status"/>.</summary>
internal sealed class ApiException(int status, string type, string? code, string message, string? param = null) : Exception(message)
{
    public int Status { get; } = status;
    public string Type { get; } = type;
    public string? Code { get; } = code;
    public string? Param { get; } = param;

    public ErrorResponse ToResponse() => new(new ErrorDetail(Message, Type, Param, Code));

    public static ApiException BadRequest(string message, string? param = null, string code = "invalid_request") =>
        new(400, "invalid_request_error", code, message, param);

    public static ApiException ModelNotFound(string model, string served) =>
        new(404, "invalid_request_error", "model_not_found", $"The model '{model}' does not exist; this server serves '{served}'.", "model");

    public static ApiException Unauthorized(bool missing) =>
        new(401, "invalid_request_error", "invalid_api_key",
            missing ? "Missing API key: send the header 'Authorization: Bearer KEY'." : "Incorrect API key provided.");

    public static ApiException QueueFull(string message) => new(429, "rate_limit_error", "queue_full", message);

    public static ApiException Internal(string message) => new(500, "server_error", "internal_error", message);
}
