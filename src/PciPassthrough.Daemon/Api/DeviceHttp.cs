using Microsoft.Net.Http.Headers;
using PciPassthrough.Daemon.Api.Contracts;
using PciPassthrough.Devices;

namespace PciPassthrough.Daemon.Api;

/// <summary>HTTP concerns of a device response: its ETag, and the If-Match a change may carry.</summary>
public static class DeviceHttp
{
    /// <summary>The DTO of a device, with its ETag set on the response.</summary>
    public static DeviceDto Respond(HttpContext context, Device device)
    {
        context.Response.Headers.ETag = new EntityTagHeaderValue($"\"{device.Version}\"").ToString();
        return DeviceDto.From(device);
    }

    /// <summary>
    /// The version tokens an If-Match header accepts; null when there is no header or it is
    /// <c>*</c> (any current version). Weak tags never match (If-Match compares strongly).
    /// </summary>
    public static IReadOnlyCollection<string>? IfMatch(HttpRequest request)
    {
        var header = request.Headers.IfMatch;
        if (header.Count == 0)
        {
            return null;
        }

        if (!EntityTagHeaderValue.TryParseList(header, out var tags))
        {
            // An unparsable If-Match can match nothing: the change is refused, never made blindly.
            return [];
        }

        if (tags.Any(t => t.Equals(EntityTagHeaderValue.Any)))
        {
            return null;
        }

        return tags.Where(t => !t.IsWeak).Select(t => t.Tag.ToString().Trim('"')).ToList();
    }
}
