using System.ComponentModel.DataAnnotations;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace PciPassthrough.Lifecycle.Tests;

public sealed class LivenessOptionsTests
{
    public static TheoryData<LivenessMode, string?, bool> ModesAndUrls() => new()
    {
        { LivenessMode.Http, null, false },
        { LivenessMode.Http, "ftp://orchestrator.example/", false },
        { LivenessMode.Http, "file:///run/orchestrator", false },
        { LivenessMode.Http, "http://orchestrator.example:8080/", true },
        { LivenessMode.Http, "https://orchestrator.example/api", true },
        { LivenessMode.Process, null, true },
        { LivenessMode.None, null, true },
    };

    [Theory]
    [MemberData(nameof(ModesAndUrls))]
    public void LivenessOptions_HttpModeNeedsAnAbsoluteHttpUrl(LivenessMode mode, string? url, bool valid)
    {
        var options = new LivenessOptions { Mode = mode, Url = url is null ? null : new Uri(url) };
        var results = new List<ValidationResult>();

        Assert.Equal(valid, Validator.TryValidateObject(options, new ValidationContext(options), results, validateAllProperties: true));
        if (!valid)
        {
            Assert.Contains(results, r => r.MemberNames.Contains(nameof(LivenessOptions.Url)));
        }
    }

    [Fact]
    public void LivenessOptions_HttpModeWithRelativeUrl_Invalid()
    {
        var options = new LivenessOptions { Mode = LivenessMode.Http, Url = new Uri("orchestrator/", UriKind.Relative) };

        Assert.False(Validator.TryValidateObject(options, new ValidationContext(options), [], validateAllProperties: true));
    }

    [Theory]
    [InlineData("00:00:00.050", false)]
    [InlineData("00:00:00.100", true)]
    [InlineData("00:05:00", true)]
    [InlineData("00:10:00", false)]
    public void LivenessOptions_TimeoutRange(string timeout, bool valid)
    {
        var options = new LivenessOptions { Timeout = TimeSpan.Parse(timeout, System.Globalization.CultureInfo.InvariantCulture) };

        Assert.Equal(valid, Validator.TryValidateObject(options, new ValidationContext(options), [], validateAllProperties: true));
    }

    [Fact]
    public void LivenessOptions_BoundFromConfigurationLikeTheDaemon_HttpWithoutUrlFailsValidation()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Liveness:Mode"] = "http",
        }).Build();
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(configuration);
        services.AddOptions<LivenessOptions>().BindConfiguration(LivenessOptions.Section).ValidateDataAnnotations();

        var e = Assert.Throws<OptionsValidationException>(
            () => services.BuildServiceProvider().GetRequiredService<IOptions<LivenessOptions>>().Value);

        Assert.Contains("Liveness:Url", e.Message, StringComparison.Ordinal);
    }
}
