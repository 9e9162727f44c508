// Starts Swagger UI on the document of the same server. `validatorUrl: null`
// keeps it from asking swagger.io to validate the document (the page must
// make no request to another host); the token typed into "Authorize" stays
// in this page's memory only.
window.addEventListener('load', () => {
  window.ui = SwaggerUIBundle({
    url: 'openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout',
  });
});
